using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

public class SmokeTests
{
    [Fact]
    public void CreateWriteReadPassesQemuCheck()
    {
        using var d = new TempDir();
        var rnd = new Random(1);
        var data = new byte[300_000];
        rnd.NextBytes(data);
        using (var img = Qcow2Image.Create(d["a.qcow2"], new Qcow2CreateOptions { Size = 64 << 20 }))
        {
            img.Write(12345, data);
            var back = new byte[data.Length];
            img.Read(12345, back);
            Assert.Equal(data, back);
        }
        Qemu.AssertClean(d["a.qcow2"]);
        System.IO.File.WriteAllBytes(d["ref.raw"], new byte[64 << 20]);
        using (var fs = new FileStream(d["ref.raw"], FileMode.Open)) { fs.Position = 12345; fs.Write(data); }
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["a.qcow2"], d["ref.raw"]);
    }
}
