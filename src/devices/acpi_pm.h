/* ACPI hardware-reduced sleep registers: how a Linux guest powers the VM off. */
#ifndef FORKVM_ACPI_PM_H
#define FORKVM_ACPI_PM_H

#include "x86/layout.h"

struct vm;

/* Where they sit and the \_S5 type: the machine's layout (x86/layout.h, also read by the
 * ACPI tables); the guest writes SLP_TYP with SLP_EN. */
#define ACPI_PM_SLEEP_CONTROL_PORT LAYOUT_ACPI_SLEEP_CONTROL_PORT
#define ACPI_PM_SLEEP_STATUS_PORT LAYOUT_ACPI_SLEEP_STATUS_PORT
#define ACPI_PM_S5_TYPE LAYOUT_ACPI_S5_TYPE
#define ACPI_PM_SLP_TYP(v) (((v) >> 2) & 7)
#define ACPI_PM_SLP_EN 0x20
#define ACPI_PM_WAK_STS 0x80

int acpi_pm_create(struct vm *vm);

#endif
