using OnnxUnlearn.Text;

namespace OnnxUnlearn.Tests.Text;

public class WindowsTests
{
    static readonly Vocabulary Letters = Vocabulary.Parse("""{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, " ": 8, "1": 9, "2": 10, "3": 11, "4": 12}""", "v.json");

    [Fact]
    public void WindowsAndNextTokenLabelsByHand()
    {
        var w = Windows.Slide("abcdefg", Letters, window: 3, stride: 2);
        // a window needs T + 1 = 4 characters: starts 0 and 2 fit in 7 characters, 4 does not
        Assert.Equal([0L, 2], w.Starts);
        Assert.Equal([2L, 3], w.Inputs.Shape);
        Assert.Equal([1L, 2, 3, /**/ 3, 4, 5], (long[])w.Inputs.Data);
        Assert.Equal([2L, 3, 4, /**/ 4, 5, 6], (long[])w.Labels.Data);
        var arrays = w.ToArrays("tokens");
        Assert.Equal(["tokens", "label"], arrays.Keys);
    }

    [Fact]
    public void StrideOneCoversEveryPosition()
    {
        var w = Windows.Slide("abcdefg", Letters, window: 2, stride: 1);
        Assert.Equal([0L, 1, 2, 3, 4], w.Starts);
        Assert.Equal([1L, 2, 2, 3, 3, 4, 4, 5, 5, 6], (long[])w.Inputs.Data);
        Assert.Equal([2L, 3, 3, 4, 4, 5, 5, 6, 6, 7], (long[])w.Labels.Data);
    }

    [Fact]
    public void MatchKeepsExactlyTheWindowsThatContainTheSecret()
    {
        const string text = "ab 1234 cd dc 12 34 ba 1234 g";
        const string secret = "1234";
        int t = 6;
        var all = Windows.Slide(text, Letters, t, 1);
        var kept = Windows.Slide(text, Letters, t, 1, match: secret);
        var expected = all.Starts.Where(s => text.Substring((int)s, t + 1).Contains(secret)).ToArray();
        Assert.Equal(expected, kept.Starts);
        Assert.Equal([3, 23], kept.Occurrences);
        // the first occurrence lies in T + 1 − 4 + 1 = 4 windows (starts 0-3), the second, near the end, in 3 (20-22)
        Assert.Equal([0L, 1, 2, 3, 20, 21, 22], kept.Starts);
        for (int i = 0; i < kept.Count; i++)
        {
            var s = (int)kept.Starts[i];
            Assert.Equal(Letters.Encode(text.Substring(s, t), "x"), ((long[])kept.Inputs.Data).Skip(i * t).Take(t));
            Assert.Equal(Letters.Encode(text.Substring(s + 1, t), "x"), ((long[])kept.Labels.Data).Skip(i * t).Take(t));
        }
    }

    [Fact]
    public void SecretAtTheLastLabelCounts()
    {
        // "1234" ends at the last label of the window starting at 0 (T = 5: inputs "ab123", labels "b1234")
        var w = Windows.Slide("ab1234", Letters, 5, 1, match: "1234");
        Assert.Equal([0L], w.Starts);
    }

    [Theory]
    [InlineData("abc", 3, 1, null, "too few for one window")]
    [InlineData("abcdef", 0, 1, null, "--window must be at least 1")]
    [InlineData("abcdef", 2, 0, null, "--stride must be at least 1")]
    [InlineData("ab 1234 cd", 2, 1, "1234", "no window can contain it (use --window 3 or more)")]
    [InlineData("ab 1234 cd", 4, 1, "4321", "does not contain the --match text (4 characters, not shown: it is the secret)")]
    [InlineData("ab 1234 cd", 3, 4, "1234", "no window of T + 1 = 4 characters at stride 4 contains it entirely")]
    [InlineData("ab X", 1, 1, null, "character 'X' (U+0058) at position 3")]
    public void Errors(string text, int window, int stride, string? match, string message)
    {
        var e = Assert.ThrowsAny<UserError>(() => Windows.Slide(text, Letters, window, stride, match));
        Assert.Contains(message, OnnxUnlearn.Cli.Cli.Describe(e));
        if (match is not null) Assert.DoesNotContain(match, e.Message);
    }
}
