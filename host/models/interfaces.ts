/**
 * What a guest-visible device model needs of the emulator that hosts it,
 * kept small and emulator-agnostic (in the spirit of rust-vmm's vm-memory
 * `GuestMemory` and vm-device's MMIO bus): guest memory, an MMIO register
 * region the emulator routes accesses to, and an interrupt line.
 *
 * Wiring, for an emulator:
 * - give the model a `GuestMemory` over the guest's RAM;
 * - route loads and stores in the device's MMIO window to `model.mmio`
 *   (`read(offset, size)` / `write(offset, size, value)`, offset relative to
 *   the window's base);
 * - give the model an `IrqLine` whose level it drives (a level-triggered
 *   wire, as virtio-mmio's interrupt is).
 */

/** One contiguous run of guest RAM and where the simulated process sees it. */
export interface GuestRamRegion {
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /** Length in bytes. */
  readonly size: number;
}

/**
 * Guest-physical memory. Addresses are guest-physical, as JavaScript safe
 * integers; an address at or above 2^53 is never backed. Every method
 * checks its whole range: a range not entirely backed by RAM moves no byte
 * and answers false (vm-memory's GuestMemoryError), never throws.
 */
export interface GuestMemory {
  /** Copy guest bytes at `gpa` into `dst`; false (nothing copied) unless all of them are RAM. */
  read(gpa: number, dst: Uint8Array): boolean;
  /** Copy `src` to guest memory at `gpa`; false (nothing written) unless all of it is RAM. */
  write(gpa: number, src: Uint8Array): boolean;
  /**
   * Where guest RAM at `gpa` sits in the simulated process (the host's VAs,
   * from `host.mmap` or `host.mapSegment`), as vm-memory's
   * `get_host_address`: the VA of `gpa` and how many bytes from there are
   * contiguous at that VA. null where `gpa` is not RAM the host can map. A
   * device model backed by iommufd maps these VAs with IOMMU_IOAS_MAP, as a
   * VMM maps its guest RAM.
   */
  hostAddress(gpa: number): { va: number; length: number } | null;
  /** The RAM regions, in any order (vm-memory's `iter()`): what a bypass (identity) mapping covers. */
  regions(): Iterable<GuestRamRegion>;
}

/** Access widths an MMIO region takes. */
export type MmioSize = 1 | 2 | 4;

/**
 * A device's MMIO register window. The emulator calls these for the guest's
 * loads and stores; offsets are relative to the window's base. A model never
 * throws on a guest access: an offset or width it does not decode reads 0
 * and ignores writes.
 */
export interface MmioRegion {
  /** The window's length in bytes. */
  readonly size: number;
  read(offset: number, size: MmioSize): number;
  write(offset: number, size: MmioSize, value: number): void;
}

/** An interrupt wire the model drives (level-triggered). */
export interface IrqLine {
  /** Set the line's level: true = asserted. Called on every change. */
  set(level: boolean): void;
}
