/* Host side of the probe guest's mailbox: post commands, collect results on the doorbell. */
#ifndef FORKVM_PROBE_DEV_H
#define FORKVM_PROBE_DEV_H

#include <stdint.h>

#include "probe/probe_abi.h"

struct vm;
struct probe_dev;

struct probe_request {
	uint32_t cmd;
	uint64_t arg[6];
};

struct probe_result {
	uint32_t status;
	uint64_t result[4];
	uint64_t latency_ns; /* post → doorbell */
};

/* Runs on the vCPU thread that rang DONE: must not block. */
typedef void (*probe_done_fn)(void *ctx, int vcpu_id, const struct probe_result *res);

int probe_dev_create(struct vm *vm, struct probe_dev **out);
void probe_dev_destroy(struct probe_dev *dev);

/* Point vCPU `id`'s slot at its mailbox and describe the work area (done by the probe boot). */
void probe_dev_attach(struct probe_dev *dev, int vcpu_id, struct probe_mailbox *mb);

/*
 * Validate and post a request to vCPU `vcpu_id`; fn fires once the guest answers.
 * Errors: -EBUSY (a command is in flight), -ERANGE (range outside the work area),
 * -EINVAL (unknown command), -ENODEV (no probe guest on that vCPU).
 */
int probe_post(struct probe_dev *dev, int vcpu_id, const struct probe_request *req,
	       probe_done_fn fn, void *ctx);
/* Drop the waiter of an in-flight request (its client went away); the guest still runs it. */
void probe_forget(struct probe_dev *dev, void *ctx);

/* Pure: check a request against a mailbox's work area (used by probe_post and tests). */
int probe_request_check(const struct probe_mailbox *mb, const struct probe_request *req);
/* Pure: write a request into a mailbox and publish it with the next sequence number. */
uint64_t probe_request_encode(struct probe_mailbox *mb, const struct probe_request *req);
/* Pure: read the answer to `seq`, or -EAGAIN if the guest has not finished it. */
int probe_result_decode(const struct probe_mailbox *mb, uint64_t seq, struct probe_result *res);

/* Host-side hash of guest RAM, identical to the guest's checksum of the same pages. */
uint64_t probe_hash_memory(const uint8_t *host, uint64_t len);

const char *probe_cmd_name(uint32_t cmd);
const char *probe_status_name(uint32_t status);

#endif
