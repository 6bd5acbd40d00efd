using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>
/// Compressed clusters are packed at byte granularity: the next one goes right after the previous one in the same
/// host cluster. Once every compressed cluster in that host cluster has been overwritten and the free applied, the
/// host cluster is free and may be handed out again (here: to a grown L1 table); packing must not keep appending
/// to it then, or the compressed bytes overwrite whatever the cluster holds now.
/// </summary>
public class CompressedReuseTests
{
    [Fact]
    public void PackingNeverAppendsToAHostClusterThatWasFreedAndReused()
    {
        const int Cs = 4096;
        using var d = new TempDir();
        string path = d["p.qcow2"];
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible ", Cs / 13 + 1)))[..Cs];
        var data = new byte[Cs];
        new Random(5).NextBytes(data);
        using (var img = Qcow2Image.Create(path, new Qcow2CreateOptions { Size = 32 << 20, ClusterSize = Cs }))
        {
            img.WriteCompressed(0, text); // packed at the start of a fresh host cluster H
            img.Write(0, data);           // copy-on-write: H loses its only compressed cluster...
            img.Flush();                  // ...and is free once the replacement is durable
            img.Resize(1L << 30, allowShrink: false); // the grown L1 table (one whole cluster) takes the lowest free cluster: H
            img.WriteCompressed(1, text); // must not be packed into H after the first compressed cluster
        }
        using (var img = Qcow2Image.Open(path))
        {
            var back = new byte[Cs];
            img.Read(0, back);
            Assert.Equal(data, back);
            img.Read(Cs, back);
            Assert.Equal(text, back);
            var r = img.Check();
            Assert.True(r.Corruptions == 0 && r.Leaks == 0, string.Join("\n", r.Messages.Take(5)));
        }
        Qemu.AssertClean(path);
    }
}
