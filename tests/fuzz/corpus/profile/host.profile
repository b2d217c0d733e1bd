# The machine ftbench runs on.  Cores, RAM and architecture are detected at
# run time; bandwidth and peak GFLOP/s are left unknown (the record carries
# the measured sgemm rate and tokens/s instead).
name = host
alias = local
description = This machine (figures detected at run time)
arch = auto
cores = auto
source_cores = detected: sysconf(_SC_NPROCESSORS_ONLN)
ram_mb = auto
source_ram_mb = detected: MemTotal in /proc/meminfo
usable_fraction = 0.8
source_usable_fraction = assumption: leave a fifth of RAM to the OS, page cache and other processes
mem_bandwidth_gbs = unknown
peak_gflops_fp32 = unknown
default_model = smollm2-135m
