/* SPDX-License-Identifier: MIT */
/*
 * guest/state ring-3 SIMD/FPU state: load known patterns into xmm/ymm0..13,
 * MXCSR and the x87 unit, then check them continuously.  This code only
 * ever runs at CPL3, natively (KVM's ring-0 emulator has no SSE/AVX/x87
 * arithmetic).  Nothing else in the guest touches these registers: the
 * kernel is built with -mgeneral-regs-only and never saves or switches
 * them, so they live only in the vCPU's XSAVE state -- which a
 * save/restore/migration must carry over.
 *
 * struct simd_patterns (state.h): reg[14][32] at 0, mxcsr 0x1C0, fcw 0x1C4,
 * st0 0x1C8, bad_reg 0x1D0, bad_mask 0x1D4.  ymm14/ymm15 are scratch.
 */
#define P_MXCSR    0x1C0
#define P_FCW      0x1C4
#define P_ST0      0x1C8
#define P_BAD_REG  0x1D0
#define P_BAD_MASK 0x1D4
#define P_SCRATCH  0x1D8

#define BAD_SSE 1
#define BAD_AVX 2
#define BAD_FPU 4

	.section .text.user, "ax"

/* void simd_load(struct simd_patterns *p, u64 avx) */
	.globl simd_load
	.type simd_load, @function
simd_load:
	testq %rsi, %rsi
	jz 1f
	.irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13
	vmovdqa \r*32(%rdi), %ymm\r
	.endr
	jmp 2f
1:
	.irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13
	movdqa \r*32(%rdi), %xmm\r
	.endr
2:	ldmxcsr P_MXCSR(%rdi)
	fninit
	fldcw P_FCW(%rdi)
	fld1
	fldpi
	fstl P_ST0(%rdi)           /* the image check compares against */
	ret
	.size simd_load, . - simd_load

/* u32 simd_check(struct simd_patterns *p, u64 avx): BAD_* bits; on a
 * register mismatch p->bad_reg/bad_mask name the first bad register and its
 * byte-equality mask (pmovmskb: bits 0-15 the xmm part, 16-31 the upper
 * half of the ymm). */
	.globl simd_check
	.type simd_check, @function
simd_check:
	xorl %r8d, %r8d
	movl $-1, P_BAD_REG(%rdi)
	testq %rsi, %rsi
	jz .Lsse

	.irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13
	vpcmpeqb \r*32(%rdi), %ymm\r, %ymm15
	vpmovmskb %ymm15, %ecx
	cmpl $-1, %ecx
	je 3f
	movl $\r, %edx
	call .Lbad
3:
	.endr
	jmp .Lfpu

.Lsse:
	.irp r, 0,1,2,3,4,5,6,7,8,9,10,11,12,13
	movdqa %xmm\r, %xmm15
	pcmpeqb \r*32(%rdi), %xmm15
	pmovmskb %xmm15, %ecx
	orl $0xFFFF0000, %ecx
	cmpl $-1, %ecx
	je 4f
	movl $\r, %edx
	call .Lbad
4:
	.endr

.Lfpu:
	stmxcsr P_SCRATCH(%rdi)
	movl P_SCRATCH(%rdi), %ecx
	cmpl P_MXCSR(%rdi), %ecx
	jne 5f
	fnstcw P_SCRATCH(%rdi)
	movzwl P_SCRATCH(%rdi), %ecx
	cmpw P_FCW(%rdi), %cx
	jne 5f
	fnstsw %ax                 /* TOP must be 6: two values pushed */
	shrl $11, %eax
	andl $7, %eax
	cmpl $6, %eax
	jne 5f
	fstl P_SCRATCH(%rdi)
	movq P_SCRATCH(%rdi), %rcx
	cmpq P_ST0(%rdi), %rcx
	je 6f
5:	orl $BAD_FPU, %r8d
6:	movl %r8d, %eax
	ret

/* ecx = pmovmskb of register edx; r8d accumulates BAD_* (ring 3 only). */
.Lbad:
	cmpl $-1, P_BAD_REG(%rdi)
	jne 7f
	movl %edx, P_BAD_REG(%rdi)
	movl %ecx, P_BAD_MASK(%rdi)
7:	cmpw $-1, %cx
	je 8f
	orl $BAD_SSE, %r8d
8:	shrl $16, %ecx
	cmpw $-1, %cx
	je 9f
	orl $BAD_AVX, %r8d
9:	ret
	.size simd_check, . - simd_check

	.section .note.GNU-stack, "", @progbits
