"""Builds tiny multiboot v1 ELF32 kernels for tests (bad-guest and loader cases)."""
import struct

MB_MAGIC = 0x1BADB002


def multiboot_header(flags=0x3):
    return struct.pack("<III", MB_MAGIC, flags, (-(MB_MAGIC + flags)) & 0xFFFFFFFF)


def elf32(code, load_addr=0x100000, mb_flags=0x3, machine=3, elf_class=1, bss=0):
    """An ELF32 executable with one PT_LOAD segment holding a multiboot header
    followed by `code`; the entry point is the first byte of `code`."""
    ehsize, phsize = 52, 32
    header_off = ehsize + phsize
    code_off = header_off + 12
    image_len = code_off + len(code)
    entry = load_addr + code_off
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    eh = ident + struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, entry, ehsize, 0, 0, ehsize,
                             phsize, 1, 40, 0, 0)
    ph = struct.pack("<IIIIIIII", 1, 0, load_addr, load_addr, image_len, image_len + bss, 7,
                     0x1000)
    return eh + ph + multiboot_header(mb_flags) + code


# Guest code snippets (32-bit protected mode).
UD2 = b"\x0f\x0b"                           # #UD with an empty IDT: triple fault
OUT_PORT_0x99 = b"\xb0\x42\xe6\x99\xf4"     # mov al,0x42; out 0x99,al; hlt
HELLO_THEN_DEBUG_EXIT = (
    b"\x66\xba\xf8\x03"                     # mov dx, 0x3f8
    b"\xb0\x48\xee"                         # mov al,'H'; out dx,al
    b"\xb0\x49\xee"                         # mov al,'I'; out dx,al
    b"\xb0\x03\xe6\xf4"                     # mov al,3; out 0xf4,al  (exit status 7)
    b"\xf4")                                # hlt
