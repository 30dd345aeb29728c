/*
 * firec's tiny test guest: a freestanding x86-64 ELF "kernel" for Firecracker.
 *
 * Firecracker jumps to the ELF entry point in 64-bit long mode, with the first
 * GiB identity-mapped, a usable stack, interrupts disabled, and %rsi pointing
 * at the Linux boot_params ("zero page"). The u32 at offset 0x228 of the zero
 * page (hdr.cmd_line_ptr) is the physical address of the NUL-terminated kernel
 * command line.
 *
 * Protocol (kept in sync with firec/testing/guest/__init__.py and the emulator):
 *   1. print "firec-guest: booted\n" on the serial console (COM1, port 0x3f8);
 *   2. for every command-line token "firec.echo=WORD", in order, print
 *      "firec-guest: echo WORD\n";
 *   3. if a token is exactly "firec.exit", pulse the reset line through the
 *      i8042 keyboard controller (0xFE to port 0x64): Firecracker then exits
 *      with status 0. Otherwise park the vCPU forever ("cli; hlt").
 * Tokens are separated by spaces (tabs and newlines too); any other token,
 * such as those Firecracker adds itself, is ignored.
 *
 * Built with -ffreestanding -nostdlib -mgeneral-regs-only: no libc, and no SSE
 * (Firecracker does not enable it for the guest).
 */

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THR_EMPTY 0x20
#define I8042_COMMAND 0x64
#define I8042_RESET 0xfe
#define BOOT_PARAMS_CMD_LINE_PTR 0x228

static inline void outb(unsigned short port, unsigned char value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline unsigned char inb(unsigned short port)
{
	unsigned char value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static __attribute__((noreturn)) void park(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void put_byte(char c)
{
	/* Wait (boundedly) for the transmit holding register to be empty. */
	for (int spins = 0; spins < 100000; spins++)
		if (inb(COM1_LSR) & LSR_THR_EMPTY)
			break;
	outb(COM1, (unsigned char)c);
}

static void put_range(const char *s, const char *end)
{
	for (; s < end; s++)
		put_byte(*s);
}

static void put_string(const char *s)
{
	for (; *s; s++)
		put_byte(*s);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Does [start, end) begin with the NUL-terminated prefix? */
static int has_prefix(const char *start, const char *end, const char *prefix)
{
	for (; *prefix; prefix++, start++)
		if (start == end || *start != *prefix)
			return 0;
	return 1;
}

void guest_main(const unsigned char *boot_params)
{
	static const char echo[] = "firec.echo=";
	static const char exit_token[] = "firec.exit";
	const unsigned int cmd_line_ptr =
		*(const volatile unsigned int *)(boot_params + BOOT_PARAMS_CMD_LINE_PTR);
	const char *p = (const char *)(unsigned long)cmd_line_ptr;
	int want_exit = 0;

	put_string("firec-guest: booted\n");
	while (p && *p) {
		while (*p && is_space(*p))
			p++;
		const char *start = p;
		while (*p && !is_space(*p))
			p++;
		if (start == p)
			break;
		if (p - start == sizeof(exit_token) - 1 && has_prefix(start, p, exit_token)) {
			want_exit = 1;
		} else if (has_prefix(start, p, echo)) {
			put_string("firec-guest: echo ");
			put_range(start + sizeof(echo) - 1, p);
			put_byte('\n');
		}
	}
	if (want_exit)
		outb(I8042_COMMAND, I8042_RESET);
	park();
}

/* Entry: keep %rsi (the zero page) as the first argument, align the stack. */
__asm__(".section .text.entry, \"ax\"\n"
	".globl _start\n"
	".type _start, @function\n"
	"_start:\n"
	"  cli\n"
	"  mov %rsi, %rdi\n"
	"  and $-16, %rsp\n"
	"  call guest_main\n"
	"1:\n"
	"  hlt\n"
	"  jmp 1b\n"
	".size _start, . - _start\n");
