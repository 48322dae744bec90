/*
 * bcryptprimitives.dll for Wine 8, which lacks it. Rust's standard library
 * on Windows draws its randomness from ProcessPrng (Windows 10 and later);
 * this forwards it to RtlGenRandom (SystemFunction036 in advapi32), which
 * Wine has. Only the test runner of scripts/windows.sh uses it: it is
 * copied beside the Windows test binaries, never shipped.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
