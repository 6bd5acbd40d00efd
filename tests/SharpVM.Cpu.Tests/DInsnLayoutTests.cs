using System.Runtime.CompilerServices;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// The pre-decoded instruction's size is a performance property: interpreting code that is not hot yet is mostly
/// waiting for blocks' DInsn arrays to come from memory, and a field added after the ulongs pads the struct to 72.
/// </summary>
public sealed class DInsnLayoutTests
{
    [Fact]
    public void ADecodedInstructionTakes64Bytes() => Assert.Equal(64, Unsafe.SizeOf<DInsn>());
}
