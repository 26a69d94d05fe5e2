package qrscan

import (
	"bytes"
	"image/png"
	"os"
	"testing"
)

// An image of a valid code ZXing misjudges at its size (the
// scale-sensitive code at 3 pixels a module, as CI once saw a posted
// image fail) reads at another, as a phone held nearer or farther would.
func TestAnImageReadAtAnotherSize(t *testing.T) {
	screen, err := os.ReadFile("testdata/scale-sensitive.txt")
	if err != nil {
		t.Fatal(err)
	}
	blocks := findBlocks(splitScreenLines(string(screen)))
	if len(blocks) != 1 {
		t.Fatalf("%d codes on the screen, want 1", len(blocks))
	}
	img := render(inkMatrix(blocks[0].lines), false, 3) // its glyphs are the light modules
	if _, err := decodeImage(img); err == nil {
		t.Fatal("the code reads as it is at 3 pixels a module: it no longer shows the detector's misjudgement")
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	const want = "2@5xuQSUWHy9OZT2qd9pqKFoyIMS0s2Aus,1bu7oSxsBPBgQdlWptUQMKuNUxHTkAcIkdiPLXd091g=,VdDq0zf3NZQougHrOU6KESrQZYvI4t5BwLphxdR0/jI=,iG3GzvRSZj1TSG70M5wpTzkg6KGlQxnQuwAiwbfqBbo="
	if got, err := FromImage(buf.Bytes()); err != nil || got != want {
		t.Errorf("read %q, %v; want the code", got, err)
	}
}
