# Raspberry Pi 5, 8 GB.  `--device rpi5` resolves here (alias).
name = rpi5-8gb
alias = rpi5, pi5
description = Raspberry Pi 5 8GB, headless Raspberry Pi OS Lite
arch = aarch64
source_arch = Raspberry Pi 5 product brief: Broadcom BCM2712, 64-bit Arm Cortex-A76
cores = 4
source_cores = Raspberry Pi 5 product brief: 2.4GHz quad-core 64-bit Arm Cortex-A76 CPU
ram_mb = 8192
source_ram_mb = Raspberry Pi 5 product brief: 2GB, 4GB, 8GB (and 16GB) LPDDR4X-4267 SDRAM variants
usable_fraction = 0.85
source_usable_fraction = assumption: Raspberry Pi OS Lite (no desktop) idles at a few hundred MB
mem_bandwidth_gbs = 17.1
source_mem_bandwidth_gbs = derived, theoretical: LPDDR4X-4267 (product brief) on a 32-bit bus = 4267e6 x 4 B
peak_gflops_fp32 = 153.6
source_peak_gflops_fp32 = derived, theoretical: 4 cores x 2.4 GHz x 16 FLOP/cycle (two 128-bit FP/ASIMD FMA pipes per core, Arm Cortex-A76 Software Optimization Guide)
default_model = qwen2.5-0.5b
source_default_model = choice: the smallest widely used instruction model family that fits LoRA fine-tuning in 8 GB
default_base_dtype = int4
source_default_base_dtype = choice: on-device fine-tuning keeps the frozen base 4-bit quantized, as the MeSP and MeBP papers run it (issue 18); --base-dtype f32 measures fp32 weights
default_group = 64
source_default_group = choice: int4 groups of 64 weights with one f16 scale each (docs/QUANT.md), as in those setups
