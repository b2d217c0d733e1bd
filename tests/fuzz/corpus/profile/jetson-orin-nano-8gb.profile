# NVIDIA Jetson Orin Nano 8GB (developer kit).  ftbench computes in fp32 on
# the CPU, so the figures are the CPU's; the GPU is not used.
name = jetson-orin-nano-8gb
alias = orin-nano, jetson
description = NVIDIA Jetson Orin Nano 8GB, CPU only (GPU unused by ftbench)
arch = aarch64
source_arch = NVIDIA Jetson Orin Nano Series Data Sheet: 6-core Arm Cortex-A78AE v8.2 64-bit CPU
cores = 6
source_cores = NVIDIA Jetson Orin Nano Series Data Sheet: 6-core Arm Cortex-A78AE, 1.5 GHz max (1.7 GHz in the JetPack 6.1 'Super' MAXN mode)
ram_mb = 8192
source_ram_mb = NVIDIA Jetson Orin Nano Series Data Sheet: 8GB 128-bit LPDDR5, shared by CPU and GPU
usable_fraction = 0.75
source_usable_fraction = assumption: memory is shared with the GPU carve-outs and the JetPack desktop
mem_bandwidth_gbs = 68
source_mem_bandwidth_gbs = NVIDIA Jetson Orin Nano Series Data Sheet: 68 GB/s (102 GB/s in 'Super' mode)
peak_gflops_fp32 = 144
source_peak_gflops_fp32 = derived, theoretical: 6 cores x 1.5 GHz x 16 FLOP/cycle (two 128-bit FMA pipes per Cortex-A78AE core)
default_model = qwen2.5-0.5b
source_default_model = choice: same model as the Raspberry Pi 5 profiles for comparison
