using System.Text;
using System.Text.Json.Nodes;

namespace SharpVM.Cli.Img;

/// <summary>
/// Orders JSON object members the way qemu-img prints them, so `--output json` is byte-for-byte what scripts
/// written against qemu-img see. qemu-img builds its JSON from a QDict, a hash table of 512 buckets that it
/// walks bucket by bucket; each bucket is a list with the newest member first. The order is therefore fixed
/// by qemu's tdb_hash of each key, not by the QAPI schema (qobject/qdict.c, util/qdict-hash).
/// </summary>
internal static class QemuJsonOrder
{
    private const int BucketCount = 512; // QDICT_BUCKET_MAX

    /// <summary>Returns a copy of <paramref name="node"/> whose objects (at every depth) list their members in QDict order.</summary>
    public static JsonNode? Apply(JsonNode? node) => node switch
    {
        JsonObject o => Reorder(o),
        JsonArray a => new JsonArray(a.Select(Apply).ToArray()),
        null => null,
        _ => node.DeepClone(),
    };

    private static JsonObject Reorder(JsonObject o)
    {
        // Within one bucket qemu lists the member inserted last first; our insertion order stands in for QAPI's.
        var members = o.Select((kv, index) => (kv.Key, kv.Value, index))
            .OrderBy(m => Bucket(m.Key)).ThenByDescending(m => m.index);
        var result = new JsonObject();
        foreach (var (key, value, _) in members) result[key] = Apply(value);
        return result;
    }

    /// <summary>qemu's tdb_hash (from Samba's TDB) reduced to a bucket index.</summary>
    internal static int Bucket(string key)
    {
        var bytes = Encoding.UTF8.GetBytes(key);
        uint value = unchecked(0x238F13AFu * (uint)bytes.Length);
        for (int i = 0; i < bytes.Length; i++) value = unchecked(value + ((uint)bytes[i] << (i * 5 % 24)));
        return (int)(unchecked(1103515243u * value + 12345u) % BucketCount);
    }
}
