// The engine's memory layout: the ONE contract between assembly/ and host/.
//
// Every constant exported here becomes a wasm global; host/engine reads them
// at instantiation (as wasmboy's constants.ts does), so nothing on the host
// side spells an offset of its own.
//
// Linear memory (segment 0 of host physical memory):
//
//   0x0000_0000 +---------------------------------------------+
//               | AssemblyScript static data (< 64 KiB)       |
//   CTRL_BASE   +---------------------------------------------+
//               | control block (region bases, counters)      |  4 KiB
//   MAILBOX     +---------------------------------------------+
//               | per-call results (translate, walk, dma)     |  4 KiB
//   BATCH_IN    +---------------------------------------------+
//               | batch requests: N x (iova lo, iova hi)      |  32 KiB
//   BATCH_OUT   +---------------------------------------------+
//               | batch results / DMA range list              |  32 KiB
//   tables      +---------------------------------------------+  (placed by init)
//               | segment table   SEG_MAX  x SEG_SIZE         |
//               | domain table    domains  x DOM_SIZE         |
//               | context table   contexts x CTX_SIZE         |
//               | IOTLB           sets x ways x TLBE_SIZE     |
//               | IOTLB IPA tags  sets x ways x 8             |
//               | front TLB       FRONT_ENTRIES x FRONT_SIZE  |
//               | frame refcounts limitFrames x 4             |
//   frameBase   +---------------------------------------------+  2 MiB aligned
//               | 4 KiB frames: page-table pages, mmap RAM,   |
//               | rings; handed out by frames.ts; the memory  |
//               | grows on demand up to the configured limit  |
//               +---------------------------------------------+
//
// A physical address is 64 bits: the high word names the segment, the low
// word is the byte offset inside it. Segment 0 is this linear memory; other
// segments are buffers registered by the embedder (an emulator's RAM).
// Because the segment sits in bits 32..51, a physical address fits the
// address field (bits 51:12) of a VT-d page-table entry unchanged.

export const PAGE_SHIFT: u32 = 12;
export const PAGE_SIZE: u32 = 1 << PAGE_SHIFT;
/** Frames per 64 KiB wasm page. */
export const FRAMES_PER_WASM_PAGE: u32 = 16;

export const CTRL_BASE: u32 = 0x10000;
export const MAILBOX: u32 = 0x11000;
export const BATCH_IN: u32 = 0x12000;
export const BATCH_OUT: u32 = 0x1a000;
export const BATCH_BYTES: u32 = 0x8000;
/** Largest N for translate_batch: one (lo, hi) pair in and out per IOVA. */
export const BATCH_MAX: u32 = BATCH_BYTES / 8;
export const TABLES_BASE: u32 = 0x22000;

// Control block (CTRL_BASE), u32 words:
//
//   +0  magic 'vIOM'        +4  layout version
//   +8  frameBase (pfn)     +12 limitFrames
//   +16 segTable            +20 domTable        +24 ctxTable
//   +28 iotlb base          +32 iotlb sets log2 +36 iotlb ways
//   +40 refcount base       +44 domains         +48 contexts
//   +56 counters: u64 hits @56, misses @64, walks @72, faults @80,
//       invalidations @88
export const CTRL_MAGIC: u32 = 0x4d4f4976; // 'vIOM' little-endian
export const LAYOUT_VERSION: u32 = 7;
export const CTRL_FRAME_BASE: u32 = 8;
export const CTRL_LIMIT_FRAMES: u32 = 12;
export const CTRL_SEG_TABLE: u32 = 16;
export const CTRL_DOM_TABLE: u32 = 20;
export const CTRL_CTX_TABLE: u32 = 24;
export const CTRL_IOTLB: u32 = 28;
export const CTRL_IOTLB_SETS_LOG2: u32 = 32;
export const CTRL_IOTLB_WAYS: u32 = 36;
export const CTRL_REFCOUNT: u32 = 40;
export const CTRL_DOMAINS: u32 = 44;
export const CTRL_CONTEXTS: u32 = 48;
export const CTRL_STAT_HITS: u32 = 56;
export const CTRL_STAT_MISSES: u32 = 64;
export const CTRL_STAT_WALKS: u32 = 72;
export const CTRL_STAT_FAULTS: u32 = 80;
export const CTRL_STAT_INVALIDATIONS: u32 = 88;
/**
 * u64 IOTLB epoch (iotlb.ts): bumped by every invalidation, context change
 * and segment removal; caches over the IOTLB (range cache, stage-2 walk
 * cache) count only while the epoch they were filled in is current. In
 * memory, not a wasm global, so that every instance sees the owner's bumps.
 */
export const CTRL_EPOCH: u32 = 0x100;
/**
 * u64 stage-2 epoch (nested.ts): the stage-2 walk cache counts an entry only
 * while this is the epoch it was filled in. Bumped by what changes stage-2
 * translations wholesale (a flush of everything, a host domain's flush or
 * destruction, the last nested domain over a parent going, a segment's
 * removal); a stage-2 change of a range drops that range's entries instead.
 */
export const CTRL_S2_EPOCH: u32 = 0x108;
/**
 * The frame allocator's cursors (frames.ts), u32 each, written by
 * `snapshot_prepare` so that a copy of linear memory carries them and
 * `resume` can take them back:
 *
 *   +0x110 next-fit cursor  +0x114 free frames below end
 *   +0x118 zeroFrom         +0x11c end
 */
export const CTRL_FRAMES: u32 = 0x110;
// Shared-memory mode (DESIGN 2: one owner, several translating workers).
//
//   +0x140 INST_MAX u32: the IOTLB base of each worker instance (0 = none);
//          the owner's invalidations sweep these as well as its own
//   +0x200 i32 writer flag: the owner is changing translations
//   +0x240 + slot * 64, i32: worker `slot` is translating or copying
//          (one cache line each, so that workers do not share a line)
// The owner sets the writer flag, waits for every in-flight word to be 0,
// changes tables and flushes every IOTLB, then clears the flag; a worker
// sets its word, backs off while the flag is set, and clears its word when
// its translation (and the copy that uses it) is done. So once an unmap
// returns, no worker holds or can find the old translation.
export const CTRL_INSTANCES: u32 = 0x140;
/** u32 at 0x13c: how many worker instances are registered (0: the owner is alone, no ring needs its lock). */
export const CTRL_INST_COUNT: u32 = 0x13c;
export const INST_MAX: u32 = 16;
export const CTRL_LOCK_WRITER: u32 = 0x200;
export const CTRL_LOCK_INFLIGHT: u32 = 0x240;
export const LOCK_STRIDE: u32 = 64;

// Event rings (events.ts): RING_MAX descriptors of RING_SIZE bytes at
// CTRL_RINGS, each a vEVENTQ's queue (or a FAULT's: pri.ts, "Page requests"
// below) in linear memory, filled by the engine on the fault path and by
// the host, drained by the host's read():
//
//   0      4      8      12     16     20     24            28      32
//   +------+------+------+------+------+------+-------------+-------+
//   | lock | base | depth| head | count| next | lost | data | lost  |
//   |      |      |      |      |      | seq  | bytes << 8  | seq   |
//   +------+------+------+------+------+------+-------------+-------+
//
// base 0 = a free slot. `depth` records of RING_HEADER + data bytes from
// base, the oldest at `head`, `count` of them. Each record is what read()
// hands out (struct iommufd_vevent_header, then the event data). `lost` = 1:
// a LOST_EVENTS header with sequence `lost seq` waits after the records.
// The lock word (0 free, 1 held) serialises producers of every instance and
// the host's reader.
export const CTRL_RINGS: u32 = 0x700;
export const RING_MAX: u32 = 64;
export const RING_SIZE: u32 = 32;
export const RING_LOCK: u32 = 0;
export const RING_BASE: u32 = 4;
export const RING_DEPTH: u32 = 8;
export const RING_HEAD: u32 = 12;
export const RING_COUNT: u32 = 16;
export const RING_SEQ: u32 = 20;
export const RING_LOST: u32 = 24;
export const RING_LOST_SEQ: u32 = 28;
/** struct iommufd_vevent_header: flags, sequence. */
export const RING_HEADER: u32 = 8;

// An instance's private region: its caches and scratch, never shared. The
// owner's sits among the tables (init); a worker's follows its own I/O
// block (the mailbox and batch areas, laid out as MAILBOX..BATCH_OUT are)
// in the frames the owner gave it, followed by its own IOTLB.
//
//   +0      stage-2 walk cache (nested.ts)     PRIV_S2C_BYTES
//   +0x4000 DMA range cache (translate.ts)     PRIV_RC_BYTES
//   +0x5000 scratch of the nested walks        256 bytes (nested.ts)
//   +0x5100 a worker's counters (u64 hits, misses, walks, faults,
//           invalidations: the CTRL_STAT_* words, moved)
export const PRIV_S2C: u32 = 0;
export const PRIV_S2C_BYTES: u32 = 0x4000;
export const PRIV_RC: u32 = 0x4000;
export const PRIV_RC_BYTES: u32 = 0x1000;
export const PRIV_SCRATCH: u32 = 0x5000;
export const PRIV_STATS: u32 = 0x5100;
export const PRIV_BYTES: u32 = 0x6000;
/** A worker's I/O block: mailbox, batch in, batch out, at their offsets from MAILBOX. */
export const IO_BYTES: u32 = 0x11000;

// Mailbox (MAILBOX), u32 words, written by translate / walk / dma_ranges:
//
//   +0  pa lo   +4  pa hi (segment)   +8  leaf shift (12, 21, 30)
//   +12 perm (PERM_*)   +16 level where the walk stopped
//   +20 bytes covered (dma_ranges)   +24 fault iova lo   +28 fault iova hi
export const MB_PA_LO: u32 = 0;
export const MB_PA_HI: u32 = 4;
export const MB_SHIFT: u32 = 8;
export const MB_PERM: u32 = 12;
export const MB_LEVEL: u32 = 16;
export const MB_COVERED: u32 = 20;
export const MB_FAULT_LO: u32 = 24;
export const MB_FAULT_HI: u32 = 28;
// Page requests (pri.ts), u32 words:
//   +64 PRI_* status of the last DMA fault   +68 its group index
//   +72 set by the host: 1 = this instance's DMA faults send no page request
export const MB_PRI: u32 = 64;
export const MB_PRI_GRP: u32 = 68;
export const MB_PRI_OFF: u32 = 72;

// Segment record (segTable + seg * SEG_SIZE):
//
//   +0 u64 size in bytes (0 = free slot; segment 0 is the linear memory)
//   +8 u32 flags (SEG_PRESENT)   +12 reserved
export const SEG_SIZE: u32 = 16;
export const SEG_MAX: u32 = 256;
export const SEG_PRESENT: u32 = 1;

// Domain record (domTable + did * DOM_SIZE): one I/O page table.
//
//   0        4        8        12       16       20       24                32
//   +--------+--------+--------+--------+--------+--------+-----------------+
//   | root   | levels | sizes  | gen    | TLB    | tables | leaf bytes      |
//   | pfn    | 3..5   | SZ_*   | 16 bit | sizes  | held   | mapped (u64)    |
//   +--------+--------+--------+--------+--------+--------+-----------------+
//   32       36       40                 48       52       56       60   64
//   +--------+--------+------------------+--------+--------+--------+------+
//   | flags  | format | stage-1 root GPA | parent | s1     | nested | res. |
//   |        |        | (nested, u64)    | did    | flags  | kids   |      |
//   +--------+--------+------------------+--------+--------+--------+------+
//   64                                  96                                128
//   +-----------------------------------+-----------------------------------+
//   | stage-1 table filter (nested):    | stage-1 table filter (nested):    |
//   | 4 KiB pages, 256 bits             | 2 MiB regions, 256 bits           |
//   +-----------------------------------+-----------------------------------+
//
//   +0  root pfn (0 = free slot)   +4  levels (3..5; AMD v1 1..6)
//   +8  leaf sizes (SZ_4K | SZ_2M | SZ_1G) in bits 2:0; VT-d: the host
//       address width in 15:8 (0 = 52); ARM stage 2: log2 of the root's
//       concatenated tables in 19:16 (radix.ts ptCreate), the granule in
//       21:20 and the input address size in 29:24 (the sizes word of
//       pt_create, below)
//   +12 generation (16 bits: the IOTLB tag; bumped to flush the domain)
//   +16 sizes present in the IOTLB (a superset; lets a lookup skip probes)
//   +20 table frames held (4 KiB each: a 16 / 64 KiB granule's table
//       holds 4 / 16)             +24 leaf bytes mapped (u64)
//   +32 flags: DOMF_DIRTY = hardware dirty tracking on (VT-d SSADE)
//   +36 entry format: FMT_VTD_SL, FMT_ARM_S2 or FMT_AMD_V1 (pte.ts), or
//       FMT_X86_S1 for a nested domain (nested.ts): its table is the guest's
//       first-stage table at +40, walked through the stage-2 domain at +48;
//       its root word holds NESTED_ROOT (a slot in use, no host table);
//       FMT_ARM_S1 likewise for a VMSAv8-64 stage 1 (nested_arm.ts)
//   +52 stage-1 flags: IOMMU_VTD_S1_* (FMT_X86_S1), or the packed CD
//       fields of ARM_S1_* (FMT_ARM_S1)    +56 nested domains on this one
//   +64 nested domains: Bloom filters (one hash each) of the IPAs its
//       stage-1 walks read table entries from since its IOTLB entries were
//       last all dropped: at +64 by 4 KiB page, at +96 by 2 MiB region;
//       bit (n * 0x9e3779b1) >>> 24 of page or region number n. A stage-2
//       change of a range that hits both drops all of the domain's entries;
//       otherwise only the entries whose output lies in the range (iotlb.ts
//       iotlbFlushNested).
// Domain id 0 is the blocked domain: a context pointing at it faults.
// (Layout version 2: the record grew from 32 to 64 bytes for the flags word;
// +24 holds a u64, so the first 32 bytes had no free word. Version 6: 128
// bytes, for the table filter.)
export const DOM_SIZE: u32 = 128;
export const DOM_S1_TABLES: u32 = 64;
/** Bytes of the table filters at DOM_S1_TABLES (pages, then 2 MiB regions). */
export const DOM_S1_TABLES_BYTES: u32 = 64;
export const DOM_FORMAT: u32 = 36;
/** Entry formats of host-owned tables (pte.ts). */
export const FMT_VTD_SL: u32 = 0;
export const FMT_ARM_S2: u32 = 1;
export const FMT_AMD_V1: u32 = 2;
/** A nested domain: guest x86-64 first-stage tables (VT-d 3.6) over a stage-2 parent. */
export const FMT_X86_S1: u32 = 3;
/** A nested domain: guest Arm VMSAv8-64 stage-1 tables (SMMUv3 CD) over a stage-2 parent. */
export const FMT_ARM_S1: u32 = 4;
/** Formats from here up are nested domains (the guest's table, walked through stage 2). */
export const FMT_NESTED: u32 = FMT_X86_S1;
// The stage-1 word of an FMT_ARM_S1 domain: the CD fields its walk obeys (SMMUv3 5.4).
//   [5:0] T0SZ   [10:6] granule shift (12, 14, 16)   [16:11] IPS in bits
//   [17] HA   [18] HD   [19] AFFD
export const ARM_S1_GRANULE_SHIFT: u32 = 6;
export const ARM_S1_IPS_SHIFT: u32 = 11;
export const ARM_S1_HA: u32 = 1 << 17;
export const ARM_S1_HD: u32 = 1 << 18;
export const ARM_S1_AFFD: u32 = 1 << 19;
export const DOM_S1_ROOT: u32 = 40;
export const DOM_PARENT: u32 = 48;
export const DOM_S1_FLAGS: u32 = 52;
export const DOM_CHILDREN: u32 = 56;
/** The root word of a nested domain: in use, but no host table (no pfn is this large). */
export const NESTED_ROOT: u32 = 0xffffffff;
export const DOM_ROOT: u32 = 0;
export const DOM_LEVELS: u32 = 4;
export const DOM_SIZES: u32 = 8;
export const DOM_GEN: u32 = 12;
export const DOM_TLB_SIZES: u32 = 16;
export const DOM_TABLES: u32 = 20;
export const DOM_MAPPED: u32 = 24;
export const DOM_FLAGS: u32 = 32;
/** DOM_FLAGS: hardware A/D tracking is on: translations set A (and D on writes) in the leaf. */
export const DOMF_DIRTY: u32 = 1;

// Context record (ctxTable + ctx * CTX_SIZE): what one device+PASID reaches.
//
//   0        4        8        12       16       20       24       28      32
//   +--------+--------+--------+--------+--------+--------+--------+-------+
//   | domain | pasid  | event  | event  | FAULT  | dev_id | PRG    | PRGs  |
//   | id     |        | tag    | ring   | ring   |        | table  | out   |
//   +--------+--------+--------+--------+--------+--------+--------+-------+
//
//   +0 domain id (0 = blocked)   +4 pasid (0 = IOMMU_NO_PASID)
//   +8 event tag: the StreamID its event records carry (the vSID)
//   +12 event ring (events.ts): 0 = its faults are not recorded here
//   +16 FAULT ring (pri.ts): 0 = its faults send no page request
//   +20 dev_id its page requests carry (the iommufd DEVICE object id)
//   +24 its PRG table: byte address in linear memory (pri.ts, below)
//   +28 page request groups outstanding in that table
// (Layout version 6: the record grew from 16 to 32 bytes for +16..+28.)
export const CTX_SIZE: u32 = 32;
export const CTX_DID: u32 = 0;
export const CTX_PASID: u32 = 4;
export const CTX_TAG: u32 = 8;
export const CTX_RING: u32 = 12;
export const CTX_PRI: u32 = 16;
export const CTX_DEVID: u32 = 20;
export const CTX_PRG: u32 = 24;
export const CTX_PRG_OUT: u32 = 28;

// Page requests (pri.ts): the FAULT queue's ring and a function's groups.
//
// A FAULT ring is a ring descriptor (CTRL_RINGS, above) made with
// ring_create(base, depth, PRI_DATA): records of RING_HEADER + PRI_DATA =
// PRI_REC bytes, one per page request, the first 32 bytes of struct
// iommu_hwpt_pgfault (include/uapi/linux/iommufd.h) as read() hands them
// out, with the engine's source where the struct has __reserved:
//
//   0        4        8        12       16       20       24               32
//   +--------+--------+--------+--------+--------+--------+----------------+
//   | flags  | dev_id | pasid  | grpid  | perm   | source | addr (u64,     |
//   |        |        |        |        |        |        | page aligned)  |
//   +--------+--------+--------+--------+--------+--------+----------------+
//
// flags: PRI_PASID_VALID | PRI_LAST_PAGE (IOMMU_PGFAULT_FLAGS_*); perm:
// PERM_R | PERM_W (IOMMU_PGFAULT_PERM_READ / _WRITE have the same values).
// source < PRI_HOST: the engine context whose fault sent it; PRI_HOST |
// token: a group the host pushed (pri_push). read() zeroes the word, adds
// length (0) and the cookie. A group's records are written together (all
// or none) and its last has PRI_LAST_PAGE, so a group never straddles the
// ring's tail. The descriptor's words keep their places; for a FAULT ring
// `lost` bit 0 is PRO, the overflow flag of the VT-d page request queue
// (PRS_REG.PRO), `next seq` counts the groups overflow answered, and `lost
// seq` counts the groups queued (wrapping): with worker instances about,
// each group queued notifies it (memory.atomic.notify), the owner's
// doorbell for groups it did not queue itself.
//
// Overflow: a group that does not fit, or that comes while PRO is set, is
// not queued: PRO is set, the count goes up, and the group is answered by
// the "hardware" with Success, so the function retries its translation
// (VT-d's behaviour on a full page request queue; Linux sizes the queue to
// avoid it, intel/prq.c, and clears PRO once it has drained the queue,
// prq_event_thread: the reader does so here). Linux's iommufd queue itself
// (eventq.c iommufd_fault_iopf_handler) is an unbounded list: the bound is
// the hardware queue's, which this ring is.
//
// PRG table (CTX_PRG): PRG_ENTRIES (one per 9-bit Page Request Group Index,
// PCIe Base Spec §10.4.1) of PRG_SIZE bytes, the groups a function's PASID
// has outstanding:
//
//   0                 8                 16       20       24       28      32
//   +-----------------+-----------------+--------+--------+--------+-------+
//   | first page IOVA | page mask (bit i| perm   | gener- | last   | pages |
//   | (u64)           | = first + i*4K) | 0=free | ation  | code   |       |
//   +-----------------+-----------------+--------+--------+--------+-------+
//
// pri_respond frees an entry: perm 0, generation + 1, the response code
// kept (a worker that waits on the generation reads it). A group holds at
// most PRG_PAGES_MAX pages, the pages of one DMA that a page request can
// fix, from the one it faulted on.
export const PRI_DATA: u32 = 24;
export const PRI_REC: u32 = 32;
export const PRI_FLAGS: u32 = 0;
export const PRI_DEVID: u32 = 4;
export const PRI_PASID: u32 = 8;
export const PRI_GRPID: u32 = 12;
export const PRI_PERM: u32 = 16;
export const PRI_SOURCE: u32 = 20;
export const PRI_ADDR: u32 = 24;
export const PRI_PASID_VALID: u32 = 1;
export const PRI_LAST_PAGE: u32 = 2;
export const PRI_HOST: u32 = 0x80000000;
/** Bit 0 of a FAULT ring's RING_LOST word: PRO, the queue overflowed and takes nothing until drained. */
export const PRI_PRO: u32 = 1;
export const PRG_ENTRIES: u32 = 512;
export const PRG_SIZE: u32 = 32;
export const PRG_BYTES: u32 = PRG_ENTRIES * PRG_SIZE;
export const PRG_FIRST: u32 = 0;
export const PRG_MASK: u32 = 8;
export const PRG_PERM: u32 = 16;
export const PRG_GEN: u32 = 20;
export const PRG_CODE: u32 = 24;
export const PRG_PAGES: u32 = 28;
export const PRG_PAGES_MAX: u32 = 64;
/**
 * What the last DMA fault did about page requests (mailbox MB_PRI): none
 * (not routed, not fixable by a page request, or page requests off for the
 * call), a new group (MB_PRI_GRP), joined an outstanding group covering
 * every page it needed (MB_PRI_GRP), the queue overflowed (answered
 * Success, nothing outstanding), no free group index (final).
 */
export const PRI_NONE: u32 = 0;
export const PRI_SENT: u32 = 1;
export const PRI_JOINED: u32 = 2;
export const PRI_OVERFLOW: u32 = 3;
export const PRI_NO_INDEX: u32 = 4;

// IOTLB entry (iotlb + (set * ways + way) * TLBE_SIZE), 32 bytes:
//
//   +0  u32 vpn lo    page number (iova >> 12) of the leaf's first page
//   +4  u32 vpn hi    | size class << 24 (0: 4 KiB, 1: 2 MiB, 2: 1 GiB)
//   +8  u32 did | generation << 16
//   +12 u32 pasid | TLBE_VALID
//   +16 u32 leaf pa lo   +20 u32 leaf pa hi (segment)
//   +24 u32 perm: PERM_R | PERM_W (writes served as they are) | TLBE_WRITABLE
//   +28 u32 next victim way (way 0 of a set only)
// After the entries, one u64 per entry, in entry order (the IPA tags):
//
//   tag = IPA of the combined leaf's first byte | 1, for an entry of a nested
//         domain (its stage-1 output: where its stage-2 translation lies);
//         0 for an entry of a host table.
//
// Only invalidation reads them (a stage-2 change by IPA range drops exactly
// the combined entries whose output lies in it: iotlbFlushNested); the hit
// path never does.
// Words 0..1 and 2..3 are compared as two u64 keys. The set index hashes the
// page number and the domain, not the PASID, so that one probe finds every
// PASID's copy of a page when a domain range is invalidated.
//
// The perm word: PERM_R is the leaf's R. TLBE_WRITABLE is the leaf's W.
// PERM_W says a write can be served from the entry as it is: W, and no D
// update owed, because the domain did not track dirty pages when the entry
// was filled or the leaf's D bit is known to be set. So the hot test stays
// `access & ~perm`, and a write hit whose leaf may be clean lands in the cold
// path with the faults: there TLBE_WRITABLE tells a refused write from one
// that needs D: walk again, set A|D in the leaf, set PERM_W in the entry.
// Whatever clears D (pt_read_dirty, pt_set_dirty_tracking) drops the entries
// of those leaves, so the next write sets D again: the hardware's IOTLB also
// caches the D state, and software invalidates after clearing D.
export const TLBE_SIZE: u32 = 32;
export const TLBE_VALID: u32 = 0x80000000;
export const TLBE_WRITABLE: u32 = 4;

// The front TLB (iotlb.ts, "The front TLB"): a direct-mapped first level in
// front of the set-associative IOTLB, one per instance, after its IOTLB's
// IPA tags (iotlb + FRONT at alignUp(entries * 40, 64)): FRONT_ENTRIES
// records of FRONT_SIZE bytes, one per 4 KiB page (a large leaf's pages
// each get their own), at slot (vpn + ctx * FRONT_CTX_MIX) & (FRONT_ENTRIES - 1),
// vpn = iova >> 12, so that a context's consecutive pages never collide:
//
//   0                                    8                                 16
//   +------------------------------------+---------------------------------+
//   | key (u64)                          | page (u64)                      |
//   |  39:0  vpn >> FRONT_LOG2           |  63:12 PA of the 4 KiB page     |
//   |  55:40 context id                  |  5:4   size class of the leaf   |
//   |  63:56 FRONT_VALID | epoch & 0x7f  |  3     0                        |
//   |                                    |  2:0   the IOTLB entry's perm   |
//   +------------------------------------+---------------------------------+
//
// The slot gives the low FRONT_LOG2 bits of vpn back (given the context),
// so the key holds the whole of (vpn, context, epoch stamp) and one u64
// compare decides a hit; the page word then answers it with no other load.
// The stamp is the low 7 bits of the IOTLB epoch (CTRL_EPOCH), which every
// invalidation, context change and segment removal bumps: they all make
// the whole front unusable at once (coarse, as a CPU's L1 TLB flush; the
// IOTLB behind stays exact and refills it without a walk). When the epoch
// reaches a multiple of 128, the owner zeroes every instance's front, so a
// stamp never comes back while an entry of its earlier epoch remains. The
// page word's bit 3 is 0: an access with ACCESS_INVALID (translate.ts)
// never passes `access & ~perm`.
export const FRONT_LOG2: u32 = 12;
export const FRONT_ENTRIES: u32 = 1 << FRONT_LOG2;
export const FRONT_SIZE: u32 = 16;
export const FRONT_BYTES: u32 = FRONT_ENTRIES * FRONT_SIZE;
/** Spreads contexts over the slots (2^32 / golden ratio, odd), so that devices' equal IOVAs do not meet. */
export const FRONT_CTX_MIX: u32 = 0x9e3779b1;
/** Key bits 63:56, the stamp: FRONT_VALID (a filled record; a zeroed one never matches) | (epoch & FRONT_STAMP_MASK). */
export const FRONT_VALID: u32 = 0x80;
export const FRONT_STAMP_MASK: u32 = 0x7f;

// The sizes word of pt_create (radix.ts ptCreate, kept as DOM_SIZES):
//
//   31:30  29:24   23:22  21:20    19:16    15:8      7:3   2:0
//  +-----+-------+------+--------+--------+---------+-----+--------------+
//  | 0   | IAS   | 0    | granule| concat | HAW     | 0   | leaf levels  |
//  +-----+-------+------+--------+--------+---------+-----+--------------+
//
// - leaf levels: bit n - 1 = leaves at level n (SZ_4K, SZ_2M, SZ_1G name
//   the 4 KiB granule's sizes; with a 16 / 64 KiB granule bit 0 is the
//   granule's page and bit 1 its 32 MiB / 512 MiB block);
// - HAW, VT-d: the host address width (0 = 52; entry address bits 51:HAW
//   are reserved, VT-d 9.8);
// - concat, ARM stage 2: log2 of the tables concatenated at the root;
// - granule, ARM stage 2: (g - 12) / 2 for a 2^g-byte granule: 0 = 4 KiB,
//   1 = 16 KiB, 2 = 64 KiB (pt_create_arm_s2 sets it; pt_create takes 0);
// - IAS, ARM stage 2: the input address size in bits, 64 - VTCR.T0SZ
//   (pt_create_arm_s2 sets it; 0 from pt_create: the table's whole span,
//   12 + 9 * levels + concat bits). The root has 2^(IAS - root shift)
//   entries: fewer than a table's (a partial initial table) or more
//   (concatenated tables).
export const PT_HAW_SHIFT: u32 = 8;
export const PT_CONCAT_SHIFT: u32 = 16;
export const PT_GRANULE_SHIFT: u32 = 20;
export const PT_IAS_SHIFT: u32 = 24;

// Leaf sizes, as a bit per size class.
export const SZ_4K: u32 = 1;
export const SZ_2M: u32 = 2;
export const SZ_1G: u32 = 4;

// Access and permission bits (the R and W bits of a VT-d entry).
export const PERM_R: u32 = 1;
export const PERM_W: u32 = 2;

// Translation status (0 = success). The level where a walk stopped is in the
// mailbox; batch results carry it as status | level << 8.
export const F_NONE: u32 = 0;
/** The context has no domain: DMA is blocked. */
export const F_BLOCKED: u32 = 1;
/** The IOVA is above the domain's address width. */
export const F_ADDR_WIDTH: u32 = 2;
/** An entry of the walk is not present (R = W = 0). */
export const F_NOT_PRESENT: u32 = 3;
/** A read was refused by the entry's permissions. */
export const F_READ: u32 = 4;
/** A write was refused by the entry's permissions. */
export const F_WRITE: u32 = 5;
/** A reserved bit or a page size the table does not support. */
export const F_RESERVED: u32 = 6;
/** A table pointer leads outside the engine's memory. */
export const F_TABLE_ADDR: u32 = 7;
/** A leaf points outside its segment, or at no segment. */
export const F_OUT_OF_SEGMENT: u32 = 8;
/** ARM: the leaf's access flag is clear (Access flag fault). */
export const F_ACCESS: u32 = 9;
/** Arm: an output or table address above the output size (IPS): Address size fault. */
export const F_ADDR_SIZE: u32 = 10;
/** Or-ed into a status: the fault happened in the stage-2 part of a nested walk. */
export const F_STAGE2: u32 = 0x80;

// Engine-level errors of control calls (negative returns); host/engine maps
// them to errnos, the engine itself knows none.
export const ERR_NOMEM: i32 = -1;
export const ERR_EXISTS: i32 = -2;
export const ERR_INVAL: i32 = -3;
export const ERR_FULL: i32 = -4;
export const ERR_NOENT: i32 = -5;
