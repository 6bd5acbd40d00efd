using System.Net.Sockets;
using SharpVM.Interop.Libc;

namespace SharpVM.Interop.Tests;

/// <summary>FileNode reads st_mode from lstat's buffer at a fixed offset: these show the offset and type bits are right.</summary>
public class FileNodeTests
{
    [Fact]
    public void ABoundUnixSocketIsASocket()
    {
        string path = Path.Combine(Path.GetTempPath(), $"sharpvm-filenode-{Guid.NewGuid():N}.sock");
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            Assert.True(FileNode.IsSocket(path));
        }
        File.Delete(path);
    }

    [Fact]
    public void RegularFilesDirectoriesDevicesAndMissingPathsAreNotSockets()
    {
        string file = Path.GetTempFileName();
        try
        {
            Assert.False(FileNode.IsSocket(file));
            Assert.False(FileNode.IsSocket(Path.GetTempPath()));
            Assert.False(FileNode.IsSocket("/dev/null"));
            Assert.False(FileNode.IsSocket(file + ".missing"));
            Assert.False(FileNode.IsSocket(Path.Combine(file, "below-a-file")));
        }
        finally { File.Delete(file); }
    }
}
