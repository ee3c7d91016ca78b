// Which GPU a WebGPU session lands on, as far as the host tells. onnxruntime-node does not expose Dawn's adapter
// info, so this reads what the kernel and the Vulkan loader see: DRM render nodes (/sys/class/drm/renderD*: PCI
// vendor, device and kernel driver), NVIDIA's /proc entries, and the Vulkan ICD manifests. Dawn picks the
// high-performance adapter, so with one GPU that GPU is it; with none, only a software rasterizer (Mesa lavapipe) is left.
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, join } from 'node:path';

const VENDORS: Record<string, string> = { '0x1002': 'AMD', '0x8086': 'Intel', '0x10de': 'NVIDIA', '0x13b5': 'ARM', '0x5143': 'Qualcomm', '0x1af4': 'virtio' };

export interface GpuDevice {
  /** e.g. 'renderD128' or 'nvidia0'. */
  node: string;
  vendor: string;
  /** PCI vendor:device, or the model name NVIDIA's driver reports. */
  id: string;
  driver?: string;
}

export interface HostGpus {
  devices: GpuDevice[];
  /** Vulkan ICD manifests found (lvp_icd = lavapipe, the CPU rasterizer). */
  icds: string[];
}

const read = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
};
const list = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};

/** GPUs and Vulkan drivers visible to this process (`root` lets tests point at a fake tree). */
export function hostGpus(root = '/'): HostGpus {
  const devices: GpuDevice[] = [];
  const drm = join(root, 'sys/class/drm');
  for (const node of list(drm).filter((n) => /^renderD\d+$/.test(n))) {
    const dev = join(drm, node, 'device');
    const vendorId = read(join(dev, 'vendor')) ?? '?';
    let driver: string | undefined;
    try {
      driver = basename(readlinkSync(join(dev, 'driver')));
    } catch {
      driver = undefined;
    }
    devices.push({ node, vendor: VENDORS[vendorId] ?? vendorId, id: `${vendorId.replace('0x', '')}:${(read(join(dev, 'device')) ?? '?').replace('0x', '')}`, driver });
  }
  const nv = join(root, 'proc/driver/nvidia/gpus');
  for (const bus of list(nv)) {
    const model = /Model:\s*(.+)/.exec(read(join(nv, bus, 'information')) ?? '')?.[1]?.trim();
    if (!devices.some((d) => d.vendor === 'NVIDIA')) devices.push({ node: `nvidia (${bus})`, vendor: 'NVIDIA', id: model ?? bus, driver: 'nvidia' });
  }
  if (!devices.some((d) => d.vendor === 'NVIDIA') && existsSync(join(root, 'dev/nvidia0'))) devices.push({ node: 'nvidia0', vendor: 'NVIDIA', id: '/dev/nvidia0', driver: 'nvidia' });
  const icds = ['usr/share/vulkan/icd.d', 'etc/vulkan/icd.d', 'usr/local/share/vulkan/icd.d'].flatMap((d) => list(join(root, d)).filter((f) => f.endsWith('.json')));
  if (process.env.VK_ICD_FILENAMES) icds.push(...process.env.VK_ICD_FILENAMES.split(':').map((f) => basename(f)));
  return { devices, icds: [...new Set(icds)] };
}

/** True when no GPU device is visible, so a WebGPU adapter can only be a software rasterizer. */
export function softwareOnly(h: HostGpus): boolean {
  return h.devices.length === 0;
}

/** One line for the start-up log: which adapter WebGPU will most likely use. */
export function describeAdapter(h: HostGpus): string {
  if (h.devices.length === 0) {
    const lvp = h.icds.some((i) => /lvp/.test(i));
    return lvp ? 'software rasterizer (Mesa lavapipe on the CPU; no GPU device node visible)' : `no GPU device node visible (Vulkan ICDs: ${h.icds.join(', ') || 'none'})`;
  }
  return h.devices.map((d) => `${d.vendor} ${d.id} on ${d.node}${d.driver ? ` (${d.driver})` : ''}`).join('; ');
}
