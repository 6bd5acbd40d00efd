namespace SharpVM.Storage;

/// <summary>Base for every error the storage library reports about an image; the message names the problem.</summary>
public class DiskImageException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The image's metadata is inconsistent or hostile (bad magic, offsets past EOF, overlaps, loops...).</summary>
public class CorruptImageException(string message, Exception? inner = null) : DiskImageException(message, inner);

/// <summary>The image is valid but uses a feature this implementation does not handle (unknown incompatible bit...).</summary>
public class UnsupportedImageException(string message) : DiskImageException(message);

/// <summary>A write was attempted on an image that must not be written (read-only open, corrupt bit set).</summary>
public class ImageReadOnlyException(string message) : DiskImageException(message);

/// <summary>Encrypted image could not be unlocked (no secret, or the secret matches no key slot).</summary>
public class ImageKeyException(string message) : DiskImageException(message);
