// Package benchfmt formats the figures of the bench's comparison programs
// (poolbench, streambench) the same way.
package benchfmt

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Dur formats a duration given in nanoseconds (negative ones too).
func Dur(v float64) string {
	sign := ""
	if v < 0 {
		sign, v = "−", -v
	}
	d := time.Duration(v)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%s%.1f µs", sign, float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%s%.2f ms", sign, float64(d)/1e6)
	default:
		return fmt.Sprintf("%s%.2f s", sign, d.Seconds())
	}
}

// Rate formats a rate per second: "1.42M/s", "38.2k/s", "903/s".
func Rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM/s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk/s", v/1e3)
	default:
		return fmt.Sprintf("%.0f/s", v)
	}
}

// Cost formats a cost relative to a floor: "×1.00".
func Cost(v float64) string { return fmt.Sprintf("×%.2f", v) }

// Times formats a ratio: "5.55×", with three decimals below 0.1.
func Times(v float64) string {
	if v < 0.1 {
		return fmt.Sprintf("%.3f×", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

// CPUModel returns the CPU's model name from /proc/cpuinfo, or "unknown".
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// Median returns the median of v, NaN when v is empty.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Cell is a table cell of v, a figure's values across rounds, formatted
// by f: their median, or with spread their min – max; n/a without any.
func Cell(v []float64, spread bool, f func(float64) string) string {
	switch {
	case len(v) == 0:
		return "n/a"
	case spread:
		return f(slices.Min(v)) + " – " + f(slices.Max(v))
	}
	return f(Median(v))
}
