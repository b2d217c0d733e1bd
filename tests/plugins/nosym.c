/* nosym: a shared object without the ftbench_method entry point. */
int ftbench_not_a_method(void);
int ftbench_not_a_method(void) { return 42; }
