using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("SharpVM.Cpu.Tests")]
[assembly: InternalsVisibleTo("SharpVM.Cpu.Bench")]
[module: System.Runtime.CompilerServices.SkipLocalsInit]
