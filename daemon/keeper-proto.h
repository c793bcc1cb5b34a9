/* The contract between sparrowd and its fence keeper (sparrow-fence,
 * daemon/fence-keeper.c): what makes a stalled holder's addresses leave the
 * kernel at the end of its lease, whatever sparrowd is doing then.
 *
 * Transport: a unix SOCK_SEQPACKET socket (SP_KEEPER_SOCKET, or [cluster]
 * fence-keeper), one client at a time, of the keeper's own uid.  Every
 * message is one SpKeeperMsg, exactly; anything else is dropped and logged.
 *
 *   keeper -> sparrowd  PAGE (first, with the page's memfd, SCM_RIGHTS)
 *   sparrowd -> keeper  ADDRESS, any number: what it may hold
 *   sparrowd -> keeper  ARM, after writing its first deadline into the page
 *   keeper -> sparrowd  ARMED: the timer runs; sparrowd may hold from now
 *                       REFUSED (text says why, family = the type of
 *                       the message refused): a bad ADDRESS or ARM
 *
 * The page (SpKeeperPage, sealed against resizing) is shared memory:
 * sparrowd extends its lease there with one atomic store per extension, no
 * message and no wake-up of the keeper, which reads it only when its timer
 * fires (at the deadline it armed) and re-arms if the deadline moved on.
 * Times are CLOCK_BOOTTIME nanoseconds, the clock of the lease.
 *
 * deadline_ns  written by sparrowd: the end of its lease; 0 when it holds
 *              nothing; SP_KEEPER_FOREVER: a lease that never ends (a single
 *              voter).  The keeper claims an expired deadline by swapping in
 *              SP_KEEPER_FENCED: sparrowd extends only with compare-and-swap
 *              from the value it wrote, so an extension and the fence never
 *              both win; after FENCED it must ARM again.
 * acked_ns     written by sparrowd: a deadline it knows is final (it saw its
 *              lease end, or stopped holding).  A fenced deadline not acked
 *              within the keeper's grace means a stalled sparrowd: killed.
 *
 * When the deadline passes unextended, or sparrowd's socket closes while it
 * holds a deadline, the keeper removes the addresses (rtnetlink), stops the
 * unit it was told to (--stop-unit), and kills an unacked sparrowd. */
#pragma once

#include <stdint.h>

#define SP_KEEPER_SOCKET        "/run/sparrow-fence/keeper.sock"
#define SP_KEEPER_MAGIC         0x53504b31u /* "SPK1" */
#define SP_KEEPER_MAX_ADDRESSES 32
#define SP_KEEPER_IFNAMSIZ      16 /* IFNAMSIZ, NUL included */
#define SP_KEEPER_FOREVER       (UINT64_MAX - 1)
#define SP_KEEPER_FENCED        UINT64_MAX

enum
{
  SP_KEEPER_MSG_PAGE = 1,
  SP_KEEPER_MSG_ADDRESS = 2,
  SP_KEEPER_MSG_ARM = 3,
  SP_KEEPER_MSG_ARMED = 4,
  SP_KEEPER_MSG_REFUSED = 5,
};

typedef struct
{
  uint32_t magic;
  uint32_t type;
  /* ADDRESS: AF_INET (prefix <= 32, 4 bytes of addr) or AF_INET6 (<= 128) */
  uint32_t family;
  uint32_t prefix;
  uint8_t addr[16];
  char ifname[SP_KEEPER_IFNAMSIZ]; /* NUL-terminated, not empty */
  char text[64];                   /* REFUSED: why, NUL-terminated */
} SpKeeperMsg;

/* Accessed with __atomic builtins (both sides), 8-byte aligned. */
typedef struct
{
  uint64_t deadline_ns;
  uint64_t acked_ns;
} SpKeeperPage;

#define SP_KEEPER_PAGE_SIZE 4096
