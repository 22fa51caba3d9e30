#include <cstdio>
int main() { std::puts("kvwire: under construction"); return 0; }
