/* Checks that a TLS descriptor call preserves what the AArch64 TLSDESC
 * ABI says it must: every register except x0 (the result), x1 (holds the
 * function) and x30 (the link register), including the full 128 bits of
 * every SIMD register.
 *
 *   long *tlsdesc_preserves(uint64_t out[17 + 64]);
 *
 * Fills x2..x18 and v0..v31 with known values, makes the descriptor call
 * for tls_probe exactly as GCC emits it, stores x2..x18 and then q0..q31
 * into out[], and returns the address of tls_probe for this thread. */
	.text
	.p2align 2
	.globl	tlsdesc_preserves
	.type	tlsdesc_preserves, %function
tlsdesc_preserves:
	stp	x29, x30, [sp, #-96]!
	mov	x29, sp
	stp	x19, x20, [sp, #16]
	stp	d8, d9, [sp, #32]
	stp	d10, d11, [sp, #48]
	stp	d12, d13, [sp, #64]
	stp	d14, d15, [sp, #80]
	mov	x19, x0
	mov	x2, #0x1102
	mov	x3, #0x1103
	mov	x4, #0x1104
	mov	x5, #0x1105
	mov	x6, #0x1106
	mov	x7, #0x1107
	mov	x8, #0x1108
	mov	x9, #0x1109
	mov	x10, #0x110a
	mov	x11, #0x110b
	mov	x12, #0x110c
	mov	x13, #0x110d
	mov	x14, #0x110e
	mov	x15, #0x110f
	mov	x16, #0x1110
	mov	x17, #0x1111
	mov	x18, #0x1112
	movi	v0.16b, #0x40
	movi	v1.16b, #0x41
	movi	v2.16b, #0x42
	movi	v3.16b, #0x43
	movi	v4.16b, #0x44
	movi	v5.16b, #0x45
	movi	v6.16b, #0x46
	movi	v7.16b, #0x47
	movi	v8.16b, #0x48
	movi	v9.16b, #0x49
	movi	v10.16b, #0x4a
	movi	v11.16b, #0x4b
	movi	v12.16b, #0x4c
	movi	v13.16b, #0x4d
	movi	v14.16b, #0x4e
	movi	v15.16b, #0x4f
	movi	v16.16b, #0x50
	movi	v17.16b, #0x51
	movi	v18.16b, #0x52
	movi	v19.16b, #0x53
	movi	v20.16b, #0x54
	movi	v21.16b, #0x55
	movi	v22.16b, #0x56
	movi	v23.16b, #0x57
	movi	v24.16b, #0x58
	movi	v25.16b, #0x59
	movi	v26.16b, #0x5a
	movi	v27.16b, #0x5b
	movi	v28.16b, #0x5c
	movi	v29.16b, #0x5d
	movi	v30.16b, #0x5e
	movi	v31.16b, #0x5f
	adrp	x0, :tlsdesc:tls_probe
	ldr	x1, [x0, #:tlsdesc_lo12:tls_probe]
	add	x0, x0, #:tlsdesc_lo12:tls_probe
	.tlsdesccall tls_probe
	blr	x1
	mrs	x20, tpidr_el0
	add	x20, x20, x0
	stp	x2, x3, [x19, #0]
	stp	x4, x5, [x19, #16]
	stp	x6, x7, [x19, #32]
	stp	x8, x9, [x19, #48]
	stp	x10, x11, [x19, #64]
	stp	x12, x13, [x19, #80]
	stp	x14, x15, [x19, #96]
	stp	x16, x17, [x19, #112]
	str	x18, [x19, #128]
	add	x0, x19, #136
	st1	{v0.16b, v1.16b, v2.16b, v3.16b}, [x0], #64
	st1	{v4.16b, v5.16b, v6.16b, v7.16b}, [x0], #64
	st1	{v8.16b, v9.16b, v10.16b, v11.16b}, [x0], #64
	st1	{v12.16b, v13.16b, v14.16b, v15.16b}, [x0], #64
	st1	{v16.16b, v17.16b, v18.16b, v19.16b}, [x0], #64
	st1	{v20.16b, v21.16b, v22.16b, v23.16b}, [x0], #64
	st1	{v24.16b, v25.16b, v26.16b, v27.16b}, [x0], #64
	st1	{v28.16b, v29.16b, v30.16b, v31.16b}, [x0], #64
	mov	x0, x20
	ldp	d14, d15, [sp, #80]
	ldp	d12, d13, [sp, #64]
	ldp	d10, d11, [sp, #48]
	ldp	d8, d9, [sp, #32]
	ldp	x19, x20, [sp, #16]
	ldp	x29, x30, [sp], #96
	ret
	.size	tlsdesc_preserves, .-tlsdesc_preserves

	.section .note.GNU-stack, "", %progbits
