package suggest

import (
	"strings"
	"testing"
)

var operations = []string{"Decrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom", "DeriveSharedSecret", "Encrypt", "ReEncrypt"}

func TestSuggest(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"transposition", "Decrpyt", "Decrypt"},
		{"case", "generatedatakey", "GenerateDataKey"},
		{"plural", "GenerateDataKeys", "GenerateDataKey"},
		{"closest of several", "GenerateDataKeyPairs", "GenerateDataKeyPair"},
		{"underscores", "Generate_Random", "GenerateRandom"},
		{"too far", "ListKeys", ""},
		{"empty", "", ""},
		{"exact", "Decrypt", "Decrypt"},
		{"very long", strings.Repeat("Decrypt", 20), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Closest(tt.input, operations); got != tt.want {
				t.Errorf("Closest(%q) = %q, want %q", tt.input, got, tt.want)
			}
		})
	}
}

func TestDidYouMean(t *testing.T) {
	if got, want := DidYouMean("Decrpyt", operations), ` (did you mean "Decrypt"?)`; got != want {
		t.Errorf("DidYouMean = %q, want %q", got, want)
	}
	if got := DidYouMean("ListKeys", operations); got != "" {
		t.Errorf("DidYouMean of a far name = %q, want \"\"", got)
	}
}
