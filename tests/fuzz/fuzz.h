/* What the fuzz harnesses share.  Each harness defines
 * LLVMFuzzerTestOneInput(); it is linked either with libFuzzer (meson
 * -Dfuzz=true, clang) or with driver.c, which feeds it the files of the
 * seed corpus and of the crashes found so far (the normal test suite). */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Once per process: GLib's messages go nowhere (hostile input is expected
 * to be refused, loudly; SPARROW_FUZZ_VERBOSE=1 shows them), but a critical is fatal: a failed
 * precondition reached from input is a bug. */
void sp_fuzz_init (void);

/* A fresh directory for one input (under /dev/shm when there is one, so
 * that fsync costs nothing); sp_fuzz_remove_dir removes it and its files. */
char *sp_fuzz_make_dir (void);
void sp_fuzz_remove_dir (const char *dir);
void sp_fuzz_write_file (const char *dir, const char *name, const uint8_t *data, size_t size);
