/* SPDX-License-Identifier: MIT */
/*
 * guest/dirty entry: Multiboot v1 header, own GDT, per-vCPU stacks.
 * The page walk itself is in walk.S.
 *
 * Ring-0 code here runs through KVM's instruction emulator on PVM hosts
 * (/work/shared/platform/PVM-GUEST-MATRIX.md): general registers only, no
 * int n / iret / paging, and every instruction costs ~230 ns.
 */

#define MB_MAGIC   0x1BADB002
#define MB_FLAGS   0x00000003 /* page-align modules + memory info */
#define VMSN       0x564D534E
#define MAX_CPUS   32
#define STACK_SHIFT 12        /* 4 KiB per vCPU */

	.section .multiboot, "a"
	.balign 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.text
	.code32
	.globl _start
	.type _start, @function
_start:
	cli
	cld
	/* Own GDT: do not rely on the loader's.  Keep EAX/EBX/ECX/EDX/ESI. */
	lgdt gdt_desc
	ljmp $0x08, $1f
1:	movl $0x10, %ebp
	movw %bp, %ds
	movw %bp, %es
	movw %bp, %fs
	movw %bp, %gs
	movw %bp, %ss
	/* Empty IDT: any exception shuts the VM down instead of running
	 * whatever the loader left there. */
	lidt idt_desc

	xorl %edi, %edi
	cmpl $VMSN, %esi
	jne 3f
	incl %edi               /* booted by vmsnap: ECX/EDX are valid */
	jmp 2f
3:	xorl %ecx, %ecx         /* not vmsnap (QEMU): vCPU 0 of 1 */
	movl $1, %edx
2:	cmpl $MAX_CPUS, %ecx
	jae dirty_halt_forever  /* no slot and no stack for this vCPU */

	movl %ecx, %ebp
	incl %ebp
	shll $STACK_SHIFT, %ebp
	leal dirty_stacks(%ebp), %esp

	subl $12, %esp          /* 16-byte aligned at the call, as the ABI expects */
	pushl %edi              /* vmsnap */
	pushl %edx              /* ncpus */
	pushl %ecx              /* cpu */
	pushl %ebx              /* multiboot info */
	pushl %eax              /* multiboot magic */
	call dirty_main
	/* fall through: dirty_main does not return */
	.size _start, . - _start

	.globl dirty_halt_forever
	.type dirty_halt_forever, @function
dirty_halt_forever:
	cli
	hlt
	jmp dirty_halt_forever
	.size dirty_halt_forever, . - dirty_halt_forever

	.section .rodata
	.balign 8
gdt:
	.quad 0
	.quad 0x00CF9B000000FFFF /* 0x08: code, flat 4 GiB, 32-bit, accessed */
	.quad 0x00CF93000000FFFF /* 0x10: data, flat 4 GiB, accessed */
gdt_end:
	.balign 4
	.word 0
gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
	.word 0
idt_desc:
	.word 0
	.long 0

	.bss
	.balign 4096
	.globl dirty_stacks
dirty_stacks:
	.skip MAX_CPUS << STACK_SHIFT

	.section .note.GNU-stack, "", @progbits
