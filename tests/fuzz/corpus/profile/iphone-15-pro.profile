# Apple iPhone 15 Pro (A17 Pro), as an iOS app would see it.
name = iphone-15-pro
alias = iphone15pro
description = Apple iPhone 15 Pro (A17 Pro), foreground iOS app
arch = arm64
source_arch = Apple iPhone 15 Pro technical specifications: A17 Pro chip
cores = 6
source_cores = Apple iPhone 15 Pro technical specifications: new 6-core CPU with 2 performance and 4 efficiency cores
ram_mb = 8192
source_ram_mb = not in Apple's spec sheet: 8 GB LPDDR5 as reported by teardowns (e.g. the iFixit iPhone 15 Pro teardown)
usable_fraction = 0.5
source_usable_fraction = assumption: iOS jetsam limit for one foreground app (with the increased-memory-limit entitlement) is roughly half of RAM
mem_bandwidth_gbs = 51.2
source_mem_bandwidth_gbs = estimate, not from a spec sheet: LPDDR5-6400 on a 64-bit bus
peak_gflops_fp32 = 376.9
source_peak_gflops_fp32 = estimate, theoretical: 2 P-cores x 3.78 GHz x 32 + 4 E-cores x 2.11 GHz x 16 FLOP/cycle (4 and 2 128-bit FMA pipes; clocks as reported in reviews, not by Apple)
default_model = qwen2.5-0.5b
source_default_model = choice: the model size on-device assistants use for small tasks
