/* SPDX-License-Identifier: MIT */
/*
 * guest/dirty page walk: the hot loops.
 *
 * On PVM hosts ring-0 guest code is interpreted by KVM's instruction
 * emulator, so the cost of a pass is (number of instructions executed) x
 * (~0.5 us).  Everything here is about executing few instructions per page.
 *
 * One cmpxchg8b per page does the whole check-and-update:
 *     EDX:EAX = expected (word1, word0) = (pass > 1 ? tag : 0, gen - 1)
 *     ECX:EBX = new      (word1, word0) = (tag, gen)
 * and ZF tells whether it matched.  On a mismatch nothing changes (the
 * page's own value is written back) and EDX:EAX receive what the page held.
 *
 * tag = page ^ 0xA5A5A5A5.  For a block base b that is a multiple of 32,
 *     tag(b + j) = (b ^ 0xA5A5A5A0) + (j ^ 5)        for 0 <= j < 32
 * (b + j = b | j, and the low five bits of 0xA5A5A5A5 are 00101), so in a
 * 32-page block every page costs one or two LEAs, cmpxchg8b and jne.
 *
 * Both functions take a struct walk (main.c) and return 0xFFFFFFFF when
 * every page matched, otherwise the failing page number with
 * found0/found1 = word0/word1 as seen.
 */

#define TAG_XOR 0xA5A5A5A5
#define TAG_HI  0xA5A5A5A0 /* TAG_XOR & ~31 */
#define TAG_LO  5          /* TAG_XOR & 31 */
#define BLOCK   32         /* pages per unrolled block */

/* struct walk (main.c) */
#define W_FIRST  0
#define W_END    4
#define W_GEN    8
#define W_STEP   12
#define W_STRIDE 16
#define W_PACE   20
#define W_CURSOR 24
#define W_FOUND0 28
#define W_FOUND1 32

/* Frame after the prologue: 4 saved registers, return address, argument. */
#define F_ARG    20

	.text
	.code32

/* ------------------------------------------------------------------------
 * u32 dirty_walk_generic(struct walk *w)
 * Pages first, first+step, ... < end; any pass; pace iterations of
 * "dec; jnz" after each page.  Also used for the unaligned head and tail of
 * the block walk.  9 instructions per page on pass 1, 10 on later passes,
 * plus 2 per pace iteration and 1 to load it.
 */
	.globl dirty_walk_generic
	.type dirty_walk_generic, @function
dirty_walk_generic:
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl F_ARG(%esp), %ecx          /* w */
	movl W_FIRST(%ecx), %esi
	cmpl W_END(%ecx), %esi
	jae .Lg_empty
	/* locals: 0 end, 4 step, 8 stride, 12 pace */
	pushl W_PACE(%ecx)
	pushl W_STRIDE(%ecx)
	pushl W_STEP(%ecx)
	pushl W_END(%ecx)
	movl %esi, %edi
	shll $12, %edi
	movl W_CURSOR(%ecx), %ebp
	movl W_GEN(%ecx), %ebx
	leal -1(%ebx), %eax
	xorl %edx, %edx
	cmpl $1, %ebx
	je .Lg_pass1
	cmpl $0, 12(%esp)
	jne .Lg_loop_pace
	jmp .Lg_loop
.Lg_pass1:
	cmpl $0, 12(%esp)
	jne .Lg_loop1_pace
	jmp .Lg_loop1

	.balign 16
.Lg_loop:
	movl %esi, (%ebp)
	movl %esi, %ecx
	xorl $TAG_XOR, %ecx
	movl %ecx, %edx
	cmpxchg8b (%edi)
	jne .Lg_fail
	addl 4(%esp), %esi
	addl 8(%esp), %edi
	cmpl (%esp), %esi
	jb .Lg_loop
	jmp .Lg_done

	.balign 16
.Lg_loop1:                              /* pass 1: EDX stays 0 */
	movl %esi, (%ebp)
	movl %esi, %ecx
	xorl $TAG_XOR, %ecx
	cmpxchg8b (%edi)
	jne .Lg_fail
	addl 4(%esp), %esi
	addl 8(%esp), %edi
	cmpl (%esp), %esi
	jb .Lg_loop1
	jmp .Lg_done

	.balign 16
.Lg_loop_pace:
	movl %esi, (%ebp)
	movl %esi, %ecx
	xorl $TAG_XOR, %ecx
	movl %ecx, %edx
	cmpxchg8b (%edi)
	jne .Lg_fail
	movl 12(%esp), %ecx
1:	decl %ecx
	jnz 1b
	addl 4(%esp), %esi
	addl 8(%esp), %edi
	cmpl (%esp), %esi
	jb .Lg_loop_pace
	jmp .Lg_done

	.balign 16
.Lg_loop1_pace:
	movl %esi, (%ebp)
	movl %esi, %ecx
	xorl $TAG_XOR, %ecx
	cmpxchg8b (%edi)
	jne .Lg_fail
	movl 12(%esp), %ecx
1:	decl %ecx
	jnz 1b
	addl 4(%esp), %esi
	addl 8(%esp), %edi
	cmpl (%esp), %esi
	jb .Lg_loop1_pace
	jmp .Lg_done

.Lg_fail:
	movl 16 + F_ARG(%esp), %ecx     /* w */
	movl %eax, W_FOUND0(%ecx)
	movl %edx, W_FOUND1(%ecx)
	movl %esi, %eax
	addl $16, %esp
	jmp .Lout
.Lg_done:
	addl $16, %esp
.Lg_empty:
	movl $0xFFFFFFFF, %eax
.Lout:
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret
	.size dirty_walk_generic, . - dirty_walk_generic

/* ------------------------------------------------------------------------
 * u32 dirty_walk_blocks(struct walk *w)
 * Step 1, no pacing; first and end must be multiples of 32, first < end.
 * Per 32-page block: 4 + 32 x (4, or 3 on pass 1) + 3 instructions.
 * The cursor is updated once per block, with the block's first page.
 */
.macro BPAGE j, pass1
	leal (\j ^ TAG_LO)(%esi), %ecx
	.if !\pass1
	leal (\j ^ TAG_LO)(%esi), %edx
	.endif
	cmpxchg8b (\j * 4096)(%edi)
	jne .Lb_fail\j
.endm

.macro BLOCKLOOP label, pass1
	.balign 16
\label:
	movl %edi, %esi
	shrl $12, %esi
	movl %esi, (%ebp)               /* cursor */
	xorl $TAG_HI, %esi
	.irp j, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	BPAGE \j, \pass1
	.endr
	cmpl (%esp), %edi               /* last block? */
	leal (BLOCK * 4096)(%edi), %edi /* LEA keeps the flags of the CMP */
	jb \label
	jmp .Lb_done
.endm

.macro FAILSTUB j
.Lb_fail\j:
	movl $\j, %ecx
	jmp .Lb_fail
.endm

	.globl dirty_walk_blocks
	.type dirty_walk_blocks, @function
dirty_walk_blocks:
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl F_ARG(%esp), %ecx          /* w */
	movl W_FIRST(%ecx), %edi
	shll $12, %edi
	movl W_END(%ecx), %eax
	shll $12, %eax
	subl $(BLOCK * 4096), %eax      /* base of the last block: no wrap at 4 GiB */
	pushl %eax                      /* 0(%esp) */
	movl W_CURSOR(%ecx), %ebp
	movl W_GEN(%ecx), %ebx
	leal -1(%ebx), %eax
	xorl %edx, %edx                 /* pass 1: expected word1 = 0, kept */
	cmpl $1, %ebx
	je .Lb_loop1
	jmp .Lb_loop

	BLOCKLOOP .Lb_loop, 0
	BLOCKLOOP .Lb_loop1, 1

	.irp j, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	FAILSTUB \j
	.endr
.Lb_fail:
	/* EDI = block base, ECX = index in the block, EDX:EAX = page content */
	shrl $12, %edi
	addl %ecx, %edi
	movl 4 + F_ARG(%esp), %ecx      /* w */
	movl %eax, W_FOUND0(%ecx)
	movl %edx, W_FOUND1(%ecx)
	movl %edi, %eax
	addl $4, %esp
	jmp .Lout
.Lb_done:
	addl $4, %esp
	movl $0xFFFFFFFF, %eax
	jmp .Lout
	.size dirty_walk_blocks, . - dirty_walk_blocks

	.section .note.GNU-stack, "", @progbits
