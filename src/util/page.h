/* The page size forkvm works in: x86-64's base page, for guest RAM, dirty logs, snapshot
 * memory files and layers (all formats are defined in these units, whatever the host uses). */
#ifndef FORKVM_UTIL_PAGE_H
#define FORKVM_UTIL_PAGE_H

#define PAGE_4K 4096ULL

#endif
