using OnnxUnlearn.Text;

namespace OnnxUnlearn.Tests.Text;

public class VocabularyTests
{
    [Fact]
    public void EncodesCharacterByCharacter()
    {
        var v = Vocabulary.Parse("""{"<pad>": 0, "a": 1, "b": 2, " ": 3, "é": 4, "😀": 5}""", "v.json");
        Assert.Equal([1, 2, 3, 4, 5, 1], v.Encode("ab é😀a", "text"));
        Assert.Equal(0, v.Pad);
        Assert.Equal(5, v.MaxId);
        Assert.Null(v.Unknown);
        Assert.Equal("😀", v.TokenOf(5));
    }

    [Fact]
    public void UnknownCharacterNamesItAndItsPosition()
    {
        var v = Vocabulary.Parse("""{"a": 1, "b": 2, "\n": 3}""", "v.json");
        var e = Assert.Throws<UserError>(() => v.Encode("ab\nbaXa", "text file 't.txt'"));
        Assert.Equal("text file 't.txt': character 'X' (U+0058) at position 5 (line 2, column 3) is not in vocabulary 'v.json'; add it to the vocabulary, or add an \"<unk>\" entry to encode unknown characters", e.Message);
        var tab = Assert.Throws<UserError>(() => v.Encode("a\tb", "--prefix"));
        Assert.Contains("character U+0009 at position 1 ", tab.Message);
    }

    [Fact]
    public void UnknownTokenStandsInWhenPresent()
    {
        var v = Vocabulary.Parse("""{"<unk>": 0, "a": 1}""", "v.json");
        Assert.Equal([1, 0, 1], v.Encode("aXa", "text"));
        var w = Vocabulary.Parse("""{"?": 9, "a": 1}""", "v.json", unknownToken: "?");
        Assert.Equal([9, 1], w.Encode("Za", "text"));
        var e = Assert.Throws<UserError>(() => Vocabulary.Parse("""{"a": 1}""", "v.json", unknownToken: "<oov>"));
        Assert.Contains("has no token \"<oov>\"", e.Message);
    }

    [Theory]
    [InlineData("""{"a": 1, "b": 1}""", "keys \"a\" and \"b\" both have id 1")]
    [InlineData("""{"a": 1, "a": 2}""", "key \"a\" appears twice")]
    [InlineData("""{"a": 1.5}""", "key \"a\" has value 1.5; token ids must be integers")]
    [InlineData("""{"a": "1"}""", "key \"a\" has value \"1\"; token ids must be integers")]
    [InlineData("""{"a": -1}""", "token ids must be 0 or greater")]
    [InlineData("""{"ab": 1}""", "key \"ab\" is not a single character")]
    [InlineData("""["a", "b"]""", "must be a JSON object")]
    [InlineData("""{}""", "is empty")]
    [InlineData("""{"a": 1""", "is not valid JSON")]
    public void BadVocabulariesAreUserErrors(string json, string message)
    {
        var e = Assert.Throws<UserError>(() => Vocabulary.Parse(json, "v.json"));
        Assert.Contains(message, e.Message);
        Assert.Contains("'v.json'", e.Message);
    }

    [Fact]
    public void MissingFileIsAUserError()
    {
        var e = Assert.Throws<UserError>(() => Vocabulary.Load("/nonexistent/vocab.json"));
        Assert.Contains("'/nonexistent/vocab.json' does not exist", e.Message);
    }
}
