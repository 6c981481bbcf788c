// Package hist is a histogram of durations that many goroutines record
// into without locks, and that is cheap to read: log-linear buckets (four
// per power of two, so a percentile is at most 25% above the truth), an
// atomic counter each.
package hist

import (
	"math/bits"
	"sync/atomic"
	"time"
)

const sub = 4 // buckets per power of two

// Histogram counts durations. The zero value is ready to use.
type Histogram struct {
	buckets [64 * sub]atomic.Uint64
	max     atomic.Int64
}

// bucket returns the bucket of n nanoseconds.
func bucket(n uint64) int {
	if n < sub {
		return int(n)
	}
	e := bits.Len64(n) - 1         // n is in [2^e, 2^(e+1))
	m := int(n>>(e-2)) & (sub - 1) // the next two bits
	return min((e-1)*sub+m, 64*sub-1)
}

// upper returns the largest duration of bucket i.
func upper(i int) time.Duration {
	if i < sub {
		return time.Duration(i)
	}
	e, m := i/sub+1, uint64(i%sub)
	return time.Duration((sub+m+1)<<(e-2) - 1)
}

// Observe records d.
func (h *Histogram) Observe(d time.Duration) {
	n := max(int64(d), 0)
	h.buckets[bucket(uint64(n))].Add(1)
	for m := h.max.Load(); n > m && !h.max.CompareAndSwap(m, n); m = h.max.Load() {
	}
}

// Percentiles are read from a Histogram.
type Percentiles struct {
	Count         uint64
	P50, P90, P99 time.Duration // the upper bound of the bucket that holds them
	Max           time.Duration
}

// Read returns the percentiles of what was observed so far.
func (h *Histogram) Read() Percentiles {
	var counts [64 * sub]uint64
	var total uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	p := Percentiles{Count: total, Max: time.Duration(h.max.Load())}
	if total == 0 {
		return p
	}
	targets := [3]uint64{(total*50 + 99) / 100, (total*90 + 99) / 100, (total*99 + 99) / 100}
	outs := [3]*time.Duration{&p.P50, &p.P90, &p.P99}
	var seen uint64
	t := 0
	for i, c := range counts {
		seen += c
		for t < 3 && seen >= targets[t] {
			*outs[t] = min(upper(i), p.Max)
			t++
		}
	}
	return p
}
