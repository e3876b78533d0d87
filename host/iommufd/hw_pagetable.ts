// HWPT_PAGING (drivers/iommu/iommufd/hw_pagetable.c): a real I/O page table
// in the engine, in the format of the IOMMU that made it, kept in sync with
// its IOAS. An automatic one is made when a device attaches to an IOAS,
// shared by the compatible devices of that IOAS, and freed with the last.

import type { Engine } from '../engine/engine.js';
import type { IommuDriver } from '../iommu/driver.js';
import type { Domain } from './io_pagetable.js';
import { IommufdObject } from './object.js';
import type { Ioas } from './ioas.js';

export class HwptPaging extends IommufdObject implements Domain {
  readonly type = 'HWPT_PAGING' as const;
  readonly did: number;
  readonly apertureStart = 0n;
  readonly apertureLast: bigint;
  readonly pgsizeMin: bigint;
  /** Devices (and PASIDs) attached. */
  attached = 0;

  constructor(private readonly engine: Engine, readonly ioas: Ioas, readonly driver: IommuDriver, readonly auto: boolean) {
    super();
    this.did = engine.ptCreate(driver.levels, driver.leafSizes);
    this.apertureLast = (1n << BigInt(driver.addressWidth)) - 1n;
    this.pgsizeMin = driver.pgsizeMin;
  }

  private inIoas = false;

  /** Join the IOAS: reserve outside the aperture and fill (iopt_table_add_domain). */
  addToIoas(): void {
    this.ioas.iopt.addDomain(this);
    this.inIoas = true;
    this.ioas.users++;
    this.ioas.hwpts.push(this);
  }

  destroy(): void {
    if (this.inIoas) {
      this.ioas.iopt.removeDomain(this);
      this.ioas.users--;
      this.ioas.hwpts.splice(this.ioas.hwpts.indexOf(this), 1);
    }
    this.engine.ptDestroy(this.did);
  }
}
