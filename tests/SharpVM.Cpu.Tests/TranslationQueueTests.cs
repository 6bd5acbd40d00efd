namespace SharpVM.Cpu.Tests;

/// <summary>The background translator's queue hands out the block the interpreter has run most often first.</summary>
public sealed class TranslationQueueTests
{
    [Fact]
    public void TakesTheHottestBlockFirst()
    {
        var queue = new TranslationQueue(capacity: 8);
        var cold = new Block { Rip = 1, Runs = 1000 };
        var hot = new Block { Rip = 2, Runs = 1000 };
        var warm = new Block { Rip = 3, Runs = 1000 };
        Assert.True(queue.TryAdd(cold));
        Assert.True(queue.TryAdd(hot));
        Assert.True(queue.TryAdd(warm));
        // The interpreter goes on running blocks while they wait; the queue looks at the counts when it hands one out.
        hot.Runs = 50_000;
        warm.Runs = 4_000;
        Assert.Same(hot, queue.TakeHottest());
        Assert.Same(warm, queue.TakeHottest());
        Assert.Same(cold, queue.TakeHottest());
    }

    [Fact]
    public void RefusesBlocksBeyondItsCapacity()
    {
        var queue = new TranslationQueue(capacity: 2);
        Assert.True(queue.TryAdd(new Block { Rip = 1 }));
        Assert.True(queue.TryAdd(new Block { Rip = 2 }));
        Assert.False(queue.TryAdd(new Block { Rip = 3 }));
        queue.TakeHottest();
        Assert.True(queue.TryAdd(new Block { Rip = 4 }));
    }
}
