/* Linked into every harness: symbols the VMM library references from code no harness runs.
 * The probe guest image is embedded by mk/probe.mk (an objcopy'd blob the fuzz build does not
 * make); boot_probe.c is linked in only through references, never called. */
#include <stdint.h>

__attribute__((weak)) const uint8_t probe_image_start[1], probe_image_end[1];
