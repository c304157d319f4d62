/*
 * The references of bench/bench_limits.py, measured in the same run as forkvm's numbers: what
 * the kernel and the memory system allow a plain process holding the same RAM.
 *   bench_ref fork MIB RUNS        fork() of a process with MIB resident (THP, as guest RAM):
 *                                  one line of microseconds per run
 *   bench_ref fanout MIB N         N fork()ed children that each answer over a pipe: "ms PRIV"
 *                                  (all answered, in ms; one idle child's private KiB)
 *   bench_ref kvmfan MIB N         as fanout, each child first making what any VM needs from
 *                                  KVM: a VM with an in-kernel irqchip, a memslot over the
 *                                  inherited RAM, one vCPU (mapped): the kernel's floor for a
 *                                  VM per child
 *   bench_ref copy MIB PATH RUNS   memcpy of MIB between resident buffers, then pwrite of MIB
 *                                  into a new file PATH (8 MiB writes, as the snapshot writer):
 *                                  "memcpy_ms ... / pwrite_ms ..."
 */
#include <errno.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static char *resident(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("bench_ref: mmap");
		exit(1);
	}
	madvise(p, len, MADV_HUGEPAGE);
	memset(p, 1, len);
	return p;
}

static long private_kib(pid_t pid)
{
	char path[64], line[256];
	long total = 0, v;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Private_Clean: %ld", &v) == 1 || sscanf(line, "Private_Dirty: %ld", &v) == 1)
			total += v;
	fclose(f);
	return total;
}

static int do_fork(size_t len, int runs)
{
	char *p = resident(len);

	for (int i = 0; i < runs; i++) {
		double t = now_us();
		pid_t c = fork();
		if (c == 0)
			_exit(0);
		t = now_us() - t;
		if (c < 0) {
			perror("bench_ref: fork");
			return 1;
		}
		waitpid(c, NULL, 0);
		printf("%s%.1f", i ? " " : "", t);
		memset(p, i, 16 << 20); /* like a guest writing between branches */
	}
	printf("\n");
	return 0;
}

/* What every VM needs from KVM, on RAM at mem (len bytes): 0 or -1. */
static int kvm_minimal(char *mem, size_t len)
{
	struct kvm_userspace_memory_region slot = { .slot = 0, .guest_phys_addr = 0,
						    .memory_size = len,
						    .userspace_addr = (unsigned long)mem };
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm, vcpu, size;

	if (kvm < 0)
		return -1;
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	/* The memslot first: set after KVM_CREATE_IRQCHIP it waits for the grace period the
	 * irqchip started (vm_create in src/builder/vm_build.c does the same). */
	if (vm < 0 || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0 ||
	    ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		return -1;
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vcpu < 0 || size <= 0 ||
	    mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0) == MAP_FAILED)
		return -1;
	return 0;
}

/* N children that answer over a pipe (first making a minimal KVM VM when kvm): prints how long
 * until all answered, in ms, and one idle child's private KiB. */
static int do_fanout(size_t len, int n, bool kvm)
{
	pid_t *kids = calloc((size_t)n, sizeof(*kids));
	char *mem, byte;
	int fds[2], got = 0;
	double t;
	long priv;

	if (!kids || pipe(fds) < 0)
		return 1;
	mem = resident(len);
	t = now_us();
	for (int i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			close(fds[0]);
			if ((kvm && kvm_minimal(mem, len) < 0) || write(fds[1], "R", 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
		if (kids[i] < 0) {
			perror("bench_ref: fork");
			return 1;
		}
	}
	close(fds[1]);
	while (got < n && read(fds[0], &byte, 1) == 1)
		got++;
	t = (now_us() - t) / 1e3;
	if (got == n)
		usleep(300000);
	priv = private_kib(kids[0]);
	for (int i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	if (got < n) {
		fprintf(stderr, "bench_ref: %d of %d children did not answer%s\n", n - got, n,
			kvm ? " (making a KVM VM failed)" : "");
		return 1;
	}
	printf("%.2f %ld\n", t, priv);
	return 0;
}

static int do_copy(size_t len, const char *path, int runs)
{
	char *src = resident(len), *dst = resident(len);
	size_t chunk = 8 << 20;

	printf("memcpy_ms");
	for (int i = 0; i < runs; i++) {
		double t = now_us();
		memcpy(dst, src, len);
		printf(" %.1f", (now_us() - t) / 1e3);
	}
	printf(" / pwrite_ms");
	for (int i = 0; i < runs; i++) {
		int fd;
		double t;
		unlink(path);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			fprintf(stderr, "bench_ref: %s: %s\n", path, strerror(errno));
			return 1;
		}
		t = now_us();
		for (size_t off = 0; off < len; off += chunk)
			if (pwrite(fd, src + off, chunk, (off_t)off) != (ssize_t)chunk) {
				fprintf(stderr, "bench_ref: pwrite %s: %s\n", path, strerror(errno));
				return 1;
			}
		if (fsync(fd) < 0)
			return 1;
		printf(" %.1f", (now_us() - t) / 1e3);
		close(fd);
	}
	unlink(path);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	size_t len = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) << 20 : 0;

	if (argc == 4 && !strcmp(argv[1], "fork") && len)
		return do_fork(len, atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "fanout") && len)
		return do_fanout(len, atoi(argv[3]), false);
	if (argc == 4 && !strcmp(argv[1], "kvmfan") && len)
		return do_fanout(len, atoi(argv[3]), true);
	if (argc == 5 && !strcmp(argv[1], "copy") && len)
		return do_copy(len, argv[3], atoi(argv[4]));
	fprintf(stderr, "usage: bench_ref fork MIB RUNS | fanout MIB N | kvmfan MIB N | "
		"copy MIB PATH RUNS\n");
	return 2;
}
