# Google Pixel 8 (Tensor G3), as an Android app would see it.
name = pixel-8
alias = pixel8
description = Google Pixel 8 (Tensor G3), foreground Android app
arch = aarch64
source_arch = Google Pixel 8 tech specs: Google Tensor G3 (Armv9 CPU cores)
cores = 9
source_cores = press coverage of Tensor G3, not in Google's spec sheet: 1x Cortex-X3 2.91 GHz + 4x Cortex-A715 2.37 GHz + 4x Cortex-A510 1.70 GHz
ram_mb = 8192
source_ram_mb = Google Pixel 8 tech specs: 8 GB LPDDR5X RAM
usable_fraction = 0.45
source_usable_fraction = assumption: Android's low-memory killer leaves a foreground app less than half of RAM on an 8 GB phone
mem_bandwidth_gbs = 51.2
source_mem_bandwidth_gbs = estimate, not from a spec sheet: LPDDR5X on a 64-bit bus at 6400 MT/s (the spec sheet gives only the memory type)
peak_gflops_fp32 = 299.2
source_peak_gflops_fp32 = estimate, theoretical: X3 2.91 GHz x 32 + 4 x A715 2.37 GHz x 16 + 4 x A510 1.70 GHz x 8 FLOP/cycle (128-bit FMA pipes: 4, 2, 1 per core)
default_model = qwen2.5-0.5b
source_default_model = choice: the model size on-device assistants use for small tasks
