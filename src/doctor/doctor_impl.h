/* The check functions of `forkvm doctor`, one file per area; doctor.c puts them in its table. */
#ifndef FORKVM_DOCTOR_IMPL_H
#define FORKVM_DOCTOR_IMPL_H

#include "doctor/doctor.h"

#define DOCTOR_CHECK(fn) int fn(const struct doctor_ctx *ctx, struct doctor_result *res)

/* doctor_kvm.c */
DOCTOR_CHECK(doctor_check_kvm);
DOCTOR_CHECK(doctor_check_kvm_caps);
DOCTOR_CHECK(doctor_check_kvm_optional);
/* doctor_mem.c */
DOCTOR_CHECK(doctor_check_uffd);
DOCTOR_CHECK(doctor_check_uffd_wp);
DOCTOR_CHECK(doctor_check_hugepages);
DOCTOR_CHECK(doctor_check_thp);
DOCTOR_CHECK(doctor_check_memfd);
/* doctor_host.c */
DOCTOR_CHECK(doctor_check_cgroup);
DOCTOR_CHECK(doctor_check_tun);
DOCTOR_CHECK(doctor_check_seccomp);
DOCTOR_CHECK(doctor_check_jail);
DOCTOR_CHECK(doctor_check_daemon);
/* doctor_disk.c */
DOCTOR_CHECK(doctor_check_disk_run);
DOCTOR_CHECK(doctor_check_disk_snapshots);
DOCTOR_CHECK(doctor_check_disk_cache);
/* doctor_image.c */
DOCTOR_CHECK(doctor_check_image);
DOCTOR_CHECK(doctor_check_rootfs);
DOCTOR_CHECK(doctor_check_tools);

#endif
