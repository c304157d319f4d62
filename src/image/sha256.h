/* The SHA-256 helper moved down to src/core (the disk layer needs it too); kept for old includes. */
#ifndef FORKVM_IMAGE_SHA256_H
#define FORKVM_IMAGE_SHA256_H

#include "util/sha256.h"

#endif
