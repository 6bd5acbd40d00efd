using System.Globalization;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

public class LuksTests
{
    private const string Pw = "s3cret-pass";

    private static string Opts(string path) => $"driver=qcow2,file.filename={path},encrypt.key-secret=sec0";

    [Fact]
    public void SharpVMEncryptedImageIsReadableByQemu()
    {
        using var d = new TempDir();
        long size = 8L << 20;
        var model = new Model(size);
        using (var img = Qcow2Image.Create(d["e.qcow2"], new Qcow2CreateOptions { Size = size, EncryptSecret = Pw, EncryptIterTimeMs = 10 }))
        {
            Assert.True(img.IsEncrypted);
            model.RandomWorkload(img, new Random(8), 60);
            model.AssertMatches(img);
        }
        // Ciphertext on disk: the plaintext pattern must not appear.
        model.SaveRaw(d["ref.raw"]);
        Qemu.Img("check", "--object", $"secret,id=sec0,data={Pw}", "--image-opts", Opts(d["e.qcow2"]));
        Assert.Equal(-1, File.ReadAllBytes(d["e.qcow2"]).AsSpan().IndexOf(model.Data.AsSpan(100_000, 64)));
        Qemu.Img("compare", "--object", $"secret,id=sec0,data={Pw}", "--image-opts", Opts(d["e.qcow2"]), $"driver=raw,file.filename={d["ref.raw"]}");
        using (var img = Qcow2Image.Open(d["e.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true, Secret = Pw }))
            model.AssertMatches(img);
    }

    [Fact]
    public void QemuEncryptedImageIsReadableBySharpVM()
    {
        using var d = new TempDir();
        long size = 8L << 20;
        Qemu.Img("create", "-q", "--object", $"secret,id=sec0,data={Pw}", "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
            d["q.qcow2"], size.ToString(CultureInfo.InvariantCulture));
        var model = new Model(size);
        InteropReadTests.QemuWorkload(d["q.qcow2"], model, 65536, new Random(3), 30, ["--object", $"secret,id=sec0,data={Pw}"], Opts(d["q.qcow2"]));
        using (var img = Qcow2Image.Open(d["q.qcow2"], new Qcow2Image.OpenOptions { Secret = Pw }))
        {
            model.AssertMatches(img);
            model.RandomWorkload(img, new Random(4), 30);
            model.AssertMatches(img);
        }
        model.SaveRaw(d["ref.raw"]);
        Qemu.Img("compare", "--object", $"secret,id=sec0,data={Pw}", "--image-opts", Opts(d["q.qcow2"]), $"driver=raw,file.filename={d["ref.raw"]}");
    }

    [Theory]
    [InlineData("aes-128", "sha1")]
    [InlineData("aes-256", "sha512")]
    public void QemuLuksVariantsRead(string cipher, string hash)
    {
        using var d = new TempDir();
        Qemu.Img("create", "-q", "--object", $"secret,id=sec0,data={Pw}", "-f", "qcow2",
            "-o", $"encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,encrypt.cipher-alg={cipher},encrypt.hash-alg={hash}",
            d["v.qcow2"], "4M");
        var model = new Model(4L << 20);
        InteropReadTests.QemuWorkload(d["v.qcow2"], model, 65536, new Random(9), 20, ["--object", $"secret,id=sec0,data={Pw}"], Opts(d["v.qcow2"]));
        using var img = Qcow2Image.Open(d["v.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true, Secret = Pw });
        model.AssertMatches(img);
    }

    [Fact]
    public void WrongKeyIsAClearError()
    {
        using var d = new TempDir();
        Qcow2Image.Create(d["e.qcow2"], new Qcow2CreateOptions { Size = 1 << 20, EncryptSecret = Pw, EncryptIterTimeMs = 10 }).Dispose();
        var e = Assert.Throws<ImageKeyException>(() => Qcow2Image.Open(d["e.qcow2"], new Qcow2Image.OpenOptions { Secret = "nope" }));
        Assert.Contains("invalid password", e.Message);
        var e2 = Assert.Throws<ImageKeyException>(() => Qcow2Image.Open(d["e.qcow2"]));
        Assert.Contains("secret", e2.Message);
    }

    [Fact]
    public void XtsMatchesIeee1619Vector()
    {
        // IEEE P1619 XTS-AES-128 vector 2: key1 = 11.., key2 = 22.., sector 0x3333333333, plaintext 44 x 32.
        var key = Convert.FromHexString("11111111111111111111111111111111" + "22222222222222222222222222222222");
        var data = new byte[512];
        Array.Fill(data, (byte)0x44, 0, 32);
        using var x = new Crypto.AesXts(key);
        var copy = (byte[])data.Clone();
        x.Encrypt(copy, 0x3333333333);
        Assert.Equal("C454185E6A16936E39334038ACEF838BFB186FFF7480ADC4289382ECD6D394F0", Convert.ToHexString(copy, 0, 32));
        x.Decrypt(copy, 0x3333333333);
        Assert.Equal(data, copy);
    }
}
