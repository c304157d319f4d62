/* ACPI hardware-reduced sleep registers: how a Linux guest powers the VM off. */
#ifndef FORKVM_ACPI_PM_H
#define FORKVM_ACPI_PM_H

struct vm;

/* The FADT's SLEEP_CONTROL_REG and SLEEP_STATUS_REG (one byte each, port I/O). */
#define ACPI_PM_SLEEP_CONTROL_PORT 0x600
#define ACPI_PM_SLEEP_STATUS_PORT 0x601
/* The \_S5 (soft off) sleep type the DSDT announces; written as SLP_TYP with SLP_EN. */
#define ACPI_PM_S5_TYPE 5
#define ACPI_PM_SLP_TYP(v) (((v) >> 2) & 7)
#define ACPI_PM_SLP_EN 0x20
#define ACPI_PM_WAK_STS 0x80

int acpi_pm_create(struct vm *vm);

#endif
