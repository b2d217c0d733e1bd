# Raspberry Pi 4 Model B, 4 GB.
name = rpi4-4gb
alias = rpi4, pi4
description = Raspberry Pi 4 Model B 4GB, headless Raspberry Pi OS Lite
arch = aarch64
source_arch = Raspberry Pi 4 Model B product brief: Broadcom BCM2711, Cortex-A72 (ARM v8) 64-bit SoC
cores = 4
source_cores = Raspberry Pi 4 Model B product brief: quad core Cortex-A72 64-bit SoC @ 1.8GHz (1.5GHz on early boards)
ram_mb = 4096
source_ram_mb = Raspberry Pi 4 Model B product brief: 1GB, 2GB, 4GB or 8GB LPDDR4-3200 SDRAM
usable_fraction = 0.85
source_usable_fraction = assumption: Raspberry Pi OS Lite (no desktop) idles at a few hundred MB
mem_bandwidth_gbs = 12.8
source_mem_bandwidth_gbs = derived, theoretical: LPDDR4-3200 (product brief) on a 32-bit bus = 3200e6 x 4 B
peak_gflops_fp32 = 115.2
source_peak_gflops_fp32 = estimate, theoretical: 4 cores x 1.8 GHz x 16 FLOP/cycle, assuming both 128-bit FP/ASIMD pipes (F0, F1 in the Cortex-A72 Software Optimization Guide) issue FMA
default_model = smollm2-135m
source_default_model = choice: the 4 GB, slower Pi gets the smallest real model
default_base_dtype = int4
source_default_base_dtype = choice: on-device fine-tuning keeps the frozen base 4-bit quantized, as the MeSP and MeBP papers run it (issue 18); --base-dtype f32 measures fp32 weights
default_group = 64
source_default_group = choice: int4 groups of 64 weights with one f16 scale each (docs/QUANT.md), as in those setups
