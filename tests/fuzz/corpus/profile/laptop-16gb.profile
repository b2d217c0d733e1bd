# A 16 GB x86-64 laptop.  Reference machine: Framework Laptop 13 with an
# AMD Ryzen 7 7840U and 2x8 GB DDR5-5600.
name = laptop-16gb
alias = laptop
description = 16 GB x86-64 laptop (reference: Ryzen 7 7840U, DDR5-5600 dual channel)
arch = x86_64
source_arch = AMD Ryzen 7 7840U product specifications
cores = 8
source_cores = AMD Ryzen 7 7840U product specifications: 8 cores / 16 threads, base 3.3 GHz, boost up to 5.1 GHz
ram_mb = 16384
source_ram_mb = Framework Laptop 13 (AMD Ryzen 7040 Series) configuration with 2x 8GB DDR5-5600
usable_fraction = 0.6
source_usable_fraction = assumption: a desktop session with a browser open keeps about 40% of RAM
mem_bandwidth_gbs = 89.6
source_mem_bandwidth_gbs = derived, theoretical: DDR5-5600 dual channel = 5600e6 x 16 B
peak_gflops_fp32 = 844.8
source_peak_gflops_fp32 = derived, theoretical: 8 cores x 3.3 GHz base x 32 FLOP/cycle (Zen 4: two 256-bit FMA pipes)
default_model = qwen2.5-1.5b
source_default_model = choice: 16 GB holds a 1.5B model's fp32 weights with room for LoRA
