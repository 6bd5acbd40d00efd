using System.Runtime.CompilerServices;

// All interop in this assembly uses blittable types only; the runtime never marshals for us.
[assembly: DisableRuntimeMarshalling]
