/*
 * The agent's memory bound (docs/AGENT.md, "Memory"). Two parts:
 *
 * - A budget shared by every connection process: a request that may need more than a few
 *   KiB (a large frame, a large read_file or get_tree) first reserves its worst case from
 *   it, waiting (bounded) while other connections hold it, and gives it back once its reply
 *   is sent. The reservations live in a MAP_SHARED table made by the listener before it
 *   forks; the listener clears the slot of a connection process that died holding one.
 * - RLIMIT_AS on each connection process (budget + AGENT_CONN_SLACK): the backstop that
 *   turns a wrong estimate into a failed allocation and an error reply, never an OOM kill.
 *   Commands and eval interpreters the connection starts get the agent's own limit back.
 */
#ifndef FORKVM_AGENT_MEM_H
#define FORKVM_AGENT_MEM_H

#include "agent.h"
#include "request.h"

#include <stddef.h>

/*
 * Make the shared reservation table (one slot per connection) and remember the agent's own
 * RLIMIT_AS. Called once by the listener before it accepts. Returns 0 or -errno (logged).
 */
int mem_setup(const struct agent_config *cfg);

/* Listener: forget whatever the connection process in slot held (it has exited). */
void mem_slot_clear(unsigned int slot);

/* Connection process, first thing: use slot, and lower RLIMIT_AS to the connection bound. */
void mem_conn_enter(unsigned int slot);

/* In a child about to exec (a command, an eval interpreter): the agent's own RLIMIT_AS.
 * Returns 0 or -errno. */
int mem_child_restore(void);

/*
 * Raise this connection's reservation to bytes (no-op when it already holds that much).
 * Waits up to cfg->mem_wait_ms for other connections to give memory back, but only while
 * it holds nothing (no hold-and-wait, so no deadlock); watches conn_fd for a hang-up.
 * -E2BIG when bytes exceed the whole budget, -EBUSY when the budget stayed short,
 * -ECONNRESET when the client hung up; e->msg says which and how much.
 */
int mem_reserve(size_t bytes, int conn_fd, struct fvm_err *e);

/* Give this connection's reservation back (after the reply went out) and return freed
 * heap pages to the kernel, so the process's RSS follows what it holds. */
void mem_release(void);

/* Worst-case bytes a frame of len payload bytes costs until its reply is sent: the
 * payload, jansson's copies of its strings, decoded base64, and its parsed values.
 * 0 for frames up to AGENT_FREE_FRAME (part of every connection's fixed allowance). */
size_t mem_frame_cost(size_t len);

/* Bytes the parsed request's op needs on top of its frame (read_file, get_tree). */
size_t mem_op_cost(const struct agent_request *req);

#endif
