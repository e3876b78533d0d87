// iommufd objects and the per-fd id table (drivers/iommu/iommufd/main.c):
// ids from 1, the lowest free one first (xa_alloc with XA_FLAGS_ALLOC1);
// a wrong-type id behaves like a missing one (ENOENT); DESTROY succeeds only
// when the table's own reference is the last one (users == 1), else EBUSY;
// a tombstoned id stays taken, and missing, until the fd closes.

import { SysError } from '../uapi/errno.js';

export type ObjType = 'IOAS' | 'DEVICE' | 'HWPT_PAGING' | 'HWPT_NESTED' | 'FAULT' | 'VIOMMU' | 'VDEVICE' | 'VEVENTQ' | 'ACCESS' | 'HW_QUEUE' | 'SELFTEST';

export abstract class IommufdObject {
  id = 0;
  /** 1 for the id table, +1 for each object or driver that depends on this one. */
  users = 1;
  abstract readonly type: ObjType;
  /** Free what the object holds; called once, after it left the table. */
  abstract destroy(): void;
}

export class ObjectTable {
  private readonly objs = new Map<number, IommufdObject>();
  /** Ids kept from reuse until the fd closes (iommufd_object_tombstone_user): lookups answer ENOENT. */
  private readonly tombstones = new Set<number>();
  /** The object get() found last (null after a removal): an IOAS_MAP and its UNMAP look up the same id, and a Map lookup costs ten times a compare. */
  private last: IommufdObject | null = null;

  /** Insert with the lowest free id (>= 1). */
  add<T extends IommufdObject>(obj: T): T {
    let id = 1;
    while (this.objs.has(id) || this.tombstones.has(id)) id++;
    obj.id = id;
    this.objs.set(id, obj);
    return obj;
  }

  /**
   * The object of that id and of one of the given types (any type when none
   * is given), or ENOENT. Two fixed parameters, not a rest array: every
   * ioctl looks an object up.
   */
  get<T extends IommufdObject>(id: number, type?: T['type'], orType?: T['type']): T {
    const last = this.last;
    const obj = last !== null && last.id === id ? last : (this.last = this.objs.get(id) ?? null);
    if (!obj || (type !== undefined && obj.type !== type && obj.type !== orType)) throw new SysError('ENOENT');
    return obj as T;
  }

  find(id: number): IommufdObject | undefined { return this.objs.get(id); }

  /** IOMMU_DESTROY: ENOENT, EBUSY while anything depends on it, else gone. */
  destroyUser(id: number): void {
    const obj = this.objs.get(id);
    if (!obj) throw new SysError('ENOENT');
    if (obj.users !== 1) throw new SysError('EBUSY');
    this.remove(obj);
  }

  /** Take an object out of the table and destroy it (kernel-internal removal). */
  remove(obj: IommufdObject): void {
    this.objs.delete(obj.id);
    this.last = null;
    obj.users--;
    obj.destroy();
  }

  /** Remove and destroy an object, keeping its id as a tombstone (a vDEVICE whose device went). */
  tombstone(obj: IommufdObject): void {
    this.tombstones.add(obj.id);
    this.remove(obj);
  }

  get size(): number { return this.objs.size; }
  values(): IterableIterator<IommufdObject> { return this.objs.values(); }
}
