/* Per-backing constructors behind guest_mem_create(); each fills host, fd, page_size, map_size. */
#ifndef FORKVM_GUEST_MEM_BACKEND_H
#define FORKVM_GUEST_MEM_BACKEND_H

#include "mem/guest_mem.h"

int guest_mem_create_anon(struct guest_mem *mem, const struct guest_mem_opts *opts);
int guest_mem_create_memfd(struct guest_mem *mem, const struct guest_mem_opts *opts);
int guest_mem_create_file(struct guest_mem *mem, const struct guest_mem_opts *opts);
int guest_mem_create_hugetlb(struct guest_mem *mem, const struct guest_mem_opts *opts);
int guest_mem_create_uffd(struct guest_mem *mem, const struct guest_mem_opts *opts);
/* Unregister and close the userfaultfd (before munmap). */
void guest_mem_uffd_release(struct guest_mem *mem);

#endif
