package ircmsg

import "strings"

// mIRC formatting control codes.
const (
	fmtBold          = '\x02'
	fmtColour        = '\x03'
	fmtHexColour     = '\x04'
	fmtReset         = '\x0f'
	fmtMonospace     = '\x11'
	fmtReverse       = '\x16'
	fmtItalic        = '\x1d'
	fmtStrikethrough = '\x1e'
	fmtUnderline     = '\x1f'
)

var isFormatting = [256]bool{
	fmtBold: true, fmtColour: true, fmtHexColour: true, fmtReset: true,
	fmtMonospace: true, fmtReverse: true, fmtItalic: true,
	fmtStrikethrough: true, fmtUnderline: true,
}

// StripFormatting removes mIRC formatting: bold, italic, underline,
// strikethrough, monospace, reverse and reset codes; \x03 colours with
// their one- or two-digit foreground and optional ",background"; and \x04
// hex colours with their RRGGBB[,RRGGBB]. A ',' is taken as part of a
// colour only when a background follows it, and a background only after a
// foreground, as mIRC does, so "\x03,5" leaves ",5". Every such control byte
// goes, so the result holds none and stripping twice changes nothing.
// It works on bytes: all codes are ASCII, so UTF-8 is never cut.
func StripFormatting(s string) string {
	i := 0
	for i < len(s) && !isFormatting[s[i]] {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for {
		b.WriteString(s[:i])
		if i == len(s) {
			return b.String()
		}
		c := s[i]
		i++
		switch c {
		case fmtColour:
			if n := digits(s[i:]); n > 0 {
				i += n
				if i+1 < len(s) && s[i] == ',' {
					if n := digits(s[i+1:]); n > 0 {
						i += 1 + n
					}
				}
			}
		case fmtHexColour:
			if hex6(s[i:]) {
				i += 6
				if i < len(s) && s[i] == ',' && hex6(s[i+1:]) {
					i += 7
				}
			}
		}
		// Everything up to the next code is text.
		s = s[i:]
		i = 0
		for i < len(s) && !isFormatting[s[i]] {
			i++
		}
	}
}

// digits returns how many of s's first two bytes are a run of digits.
func digits(s string) int {
	n := 0
	for n < 2 && n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}

func hex6(s string) bool {
	if len(s) < 6 {
		return false
	}
	for i := 0; i < 6; i++ {
		c := s[i]
		if !isDigit(c) && (c|0x20 < 'a' || c|0x20 > 'f') {
			return false
		}
	}
	return true
}
