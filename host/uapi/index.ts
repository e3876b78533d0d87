/**
 * The uAPI table: every ioctl number, enum and struct layout the project
 * uses, transcribed from the Linux headers. Nothing outside host/uapi spells
 * an offset.
 */
export * from './struct.js';
export * from './errno.js';
export * from './iommufd.js';
export * from './vfio.js';
