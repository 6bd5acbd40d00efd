// The C side of the KVM-path benchmark: the smallest VMM that does the same work as
// `SharpVM.Bench pio`: open /dev/kvm, create a VM with 16 MiB of RAM and one vCPU, run a real-mode
// guest that does N `out 0x10, al` and then `hlt`, counting each PIO exit in a plain loop.
// Prints: "first-exit" as soon as the first exit arrives, then "setup_us=... exit_ns=... exits=...".
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], 0, 10) : 200000;
  // A first VM, torn down, then a second one that runs: the same sequence as the SharpVM side.
  double cold = 0, warm = 0;
  int kvm = -1, vm = -1, vcpu = -1; uint8_t *mem = 0; struct kvm_run *run = 0; size_t size = 16 << 20;
  for (int round = 0; round < 2; round++) {
    double t0 = now();
    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != 12) die("api");
    vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    mem = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uint64_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    // CPUID as any real VMM sets it: the host's supported leaves.
    struct { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[256]; } cpuid = {.h.nent = 256};
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
    if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
    int runsize = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    run = mmap(0, runsize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
    if (round == 0) {
      cold = now() - t0;
      munmap(run, runsize); close(vcpu); close(vm); munmap(mem, size); close(kvm);
    } else warm = now() - t0;
  }

  uint8_t code[] = {0x66, 0xB9, 0, 0, 0, 0, 0xE6, 0x10, 0x66, 0x49, 0x75, 0xFA, 0xF4};
  memcpy(code + 2, &n, 4);
  memcpy(mem + 0x10000, code, sizeof code);
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0x10000; sregs.cs.selector = 0x1000;
  ioctl(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs = {.rip = 0, .rflags = 2};
  ioctl(vcpu, KVM_SET_REGS, &regs);

  uint64_t exits = 0, sum = 0;
  double start = 0, last = 0;
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason == KVM_EXIT_IO) {
      if (exits++ == 0) { start = now(); printf("first-exit\n"); fflush(stdout); }
      sum += *((uint8_t *)run + run->io.data_offset);
      last = now();
      continue;
    }
    if (run->exit_reason == KVM_EXIT_HLT) break;
    fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
    return 1;
  }
  printf("setup_cold_us=%.1f setup_us=%.1f exit_ns=%.1f exits=%llu\n", cold * 1e6, warm * 1e6, (last - start) / (exits - 1) * 1e9, (unsigned long long)exits);
  return sum == 0xFFFFFFFF; // keep the sum alive
}
