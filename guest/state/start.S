/* SPDX-License-Identifier: MIT */
/*
 * guest/state entry: Multiboot v1 header, 32-bit entry, identity page
 * tables, long mode, GDT, the AP real-mode trampoline, interrupt stubs and
 * the ring-3 glue.
 *
 * The object is assembled as x86_64 (the 32- and 16-bit parts use .code32 /
 * .code16) and the final image is converted to ELF32 with objcopy, because
 * QEMU's multiboot loader only takes ELF32.
 *
 * Ring-0 code runs through KVM's instruction emulator on PVM hosts
 * (/work/shared/platform/PVM-GUEST-MATRIX.md): general registers only, no
 * int n / int3 / 32-bit iret, 64-bit paging only; iretq is fine.
 */

#define MB_MAGIC   0x1BADB002
#define MB_FLAGS   0x00000003 /* page-align modules + memory info */
#define VMSN       0x564D534E
#define KSTACK     8192
#define TRAMP      0x8000     /* VMSNAP_STATE_TRAMPOLINE_GPA: SIPI vector 0x08 */

#define SEL_KCODE64 0x08
#define SEL_KDATA   0x10
#define SEL_KCODE32 0x18
#define SEL_UDATA   0x23
#define SEL_UCODE64 0x2B

	.section .multiboot, "a"
	.balign 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

/* ---- vCPU 0: 32-bit protected mode from the multiboot loader ---------- */
	.text
	.code32
	.globl _start
	.type _start, @function
_start:
	cli
	cld
	/* vmsnap may start the APs at this entry too (ECX = index): park them
	 * until vCPU 0 sends INIT/SIPI, which resets them into the trampoline. */
	cmpl $VMSN, %esi
	jne 1f
	testl %ecx, %ecx
	jnz park32
1:	movl %eax, boot_magic
	movl %ebx, boot_mbi
	movl %esi, boot_esi
	movl %edx, boot_edx

	lgdt gdt_desc
	ljmp $SEL_KCODE32, $2f
2:	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	movw %ax, %ss

	/* Identity map of the low 4 GiB with 2 MiB pages, user-accessible
	 * (ring 3 reads the status block and the config, and dirties RAM).
	 * PML4[0] -> PDPT; PDPT[0..3] -> PD0..PD3; the last GiB (LAPIC,
	 * IOAPIC) is mapped uncached. */
	movl $pdpt + 0x7, pml4
	movl $0, pml4 + 4
	xorl %ecx, %ecx
	movl $pd + 0x7, %eax
3:	movl %eax, pdpt(,%ecx,8)
	movl $0, pdpt + 4(,%ecx,8)
	addl $4096, %eax
	incl %ecx
	cmpl $4, %ecx
	jb 3b
	xorl %ecx, %ecx
4:	movl %ecx, %eax
	shll $21, %eax
	orl $0x87, %eax            /* P | RW | US | PS */
	cmpl $1536, %ecx
	jb 5f
	orl $0x18, %eax            /* PWT | PCD above 3 GiB */
5:	movl %eax, pd(,%ecx,8)
	movl $0, pd + 4(,%ecx,8)
	incl %ecx
	cmpl $2048, %ecx
	jb 4b

	movl %cr4, %eax
	orl $0x20, %eax            /* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xC0000080, %ecx     /* EFER */
	rdmsr
	orl $0x100, %eax           /* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax      /* PG | PE */
	movl %eax, %cr0
	ljmp $SEL_KCODE64, $long_entry
	.size _start, . - _start

park32:
	cli
	hlt
	jmp park32

	.code64
long_entry:
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movabsq $kstacks + KSTACK, %rsp
	xorl %ebp, %ebp
	call kmain
6:	cli
	hlt
	jmp 6b

/* ---- APs: INIT/SIPI lands in the trampoline copy at 0x8000 ------------ */
	.globl ap_long_entry
ap_long_entry:
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movq ap_boot_rsp(%rip), %rsp
	movl ap_boot_cpu(%rip), %edi
	xorl %ebp, %ebp
	call ap_main
7:	cli
	hlt
	jmp 7b

/* Copied to TRAMP by vCPU 0 (kernel.c); position-dependent on TRAMP. */
	.section .rodata
	.globl tramp_start, tramp_end
	.balign 16
	.code16
tramp_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	lgdtl tramp_gdtr - tramp_start
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $SEL_KCODE32, $(TRAMP + tramp32 - tramp_start)
	.code32
tramp32:
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl %cr4, %eax
	orl $0x20, %eax
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xC0000080, %ecx
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax
	movl %eax, %cr0
	ljmp $SEL_KCODE64, $ap_long_entry
	.balign 4
	.word 0
tramp_gdtr:
	.word gdt_end - gdt - 1
	.long gdt
tramp_end:
	.code64

/* ---- interrupts ---------------------------------------------------------
 * One stub per vector pushes (a dummy error code and) the vector, then the
 * caller-saved registers; isr_dispatch(struct frame *) does the rest.  The
 * stack is 16-byte aligned at the call: the CPU aligns it, then pushes 5
 * words, + error + vector + 9 registers = 16 words. */
	.text
	.altmacro
	.macro STUB v
	.balign 16
isr_stub_\v:
	.if (\v == 8) || ((\v >= 10) && (\v <= 14)) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
	.else
	pushq $0
	.endif
	pushq $\v
	jmp isr_common
	.endm

	.balign 16
isr_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	cld
	movq %rsp, %rdi
	call isr_dispatch
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rax
	addq $16, %rsp
	iretq

	.set vec, 0
	.rept 256
	STUB %vec
	.set vec, vec + 1
	.endr

	.section .rodata
	.balign 8
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.macro STUBADDR v
	.quad isr_stub_\v
	.endm
	.rept 256
	STUBADDR %vec
	.set vec, vec + 1
	.endr
	.noaltmacro

/* enter_user(rip, rsp, arg): iretq to ring 3 with IF=1. */
	.text
	.globl enter_user
enter_user:
	movl $SEL_UDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	pushq $SEL_UDATA
	pushq %rsi
	pushq $0x202
	pushq $SEL_UCODE64
	pushq %rdi
	movq %rdx, %rdi
	xorl %eax, %eax
	xorl %ecx, %ecx
	xorl %edx, %edx
	xorl %esi, %esi
	iretq

/* ---- ring 3 -------------------------------------------------------------
 * r3_call(req, a, b, c): the ring-3 task's way into ring 0.  syscall and
 * int n do not work on PVM (syscall stays at CPL3, int $0x80 gives #UD), so
 * it executes ud2 at a known address; the #UD handler (kernel.c) serves the
 * request with rax = req, rdi = a, rsi = b, rdx = c, puts the answer in rax
 * and resumes after the ud2. */
	.section .text.user, "ax"
	.globl r3_call, r3_call_ud2
r3_call:
	movq %rdi, %rax
	movq %rsi, %rdi
	movq %rdx, %rsi
	movq %rcx, %rdx
r3_call_ud2:
	ud2
	ret

/* ---- data ---------------------------------------------------------------- */
	.data
	.balign 16
	.globl gdt, gdt_tss
gdt:
	.quad 0
	.quad 0x00AF9B000000FFFF   /* 0x08 kernel code, 64-bit, accessed */
	.quad 0x00CF93000000FFFF   /* 0x10 kernel data, accessed */
	.quad 0x00CF9B000000FFFF   /* 0x18 kernel code, 32-bit (entry, trampoline) */
	.quad 0x00CFF3000000FFFF   /* 0x20 user data (0x23) */
	.quad 0x00AFFB000000FFFF   /* 0x28 user code, 64-bit (0x2B) */
	.quad 0, 0                 /* 0x30, 0x38: unused */
gdt_tss:
	.fill 2 * 16, 8, 0         /* 0x40 + 16 * i: TSS of vCPU i (16 vCPUs) */
gdt_end:
	.balign 4
	.word 0
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

	.globl boot_magic, boot_mbi, boot_esi, boot_edx, ap_boot_rsp, ap_boot_cpu
	.balign 8
boot_magic:  .long 0
boot_mbi:    .long 0
boot_esi:    .long 0
boot_edx:    .long 0
ap_boot_rsp: .quad 0
ap_boot_cpu: .long 0

	.bss
	.balign 4096
	.globl pml4
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096

	.section .note.GNU-stack, "", @progbits
