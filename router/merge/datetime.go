package merge

import (
	"errors"
	"math"
)

// Text dates and timestamps are read in PostgreSQL's output format for
// DateStyle ISO (the default): 2024-01-02, 2024-01-02 03:04:05.5,
// 2024-01-02 03:04:05.5+05:30, with " BC" for years before 1 AD, and
// infinity / -infinity. Any other DateStyle is refused as malformed, never
// misread. Results are comparable within one column: days (date) or
// microseconds (timestamp, timestamptz at UTC) since 1970-01-01.

var errDatetime = errors.New("not an ISO DateStyle value")

const usPerDay = 86400 * 1000000

type dtParser struct {
	s []byte
	i int
}

func (p *dtParser) digits(min, max int) (int64, bool) {
	start := p.i
	var n int64
	for p.i < len(p.s) && p.i-start < max && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		n = n*10 + int64(p.s[p.i]-'0')
		p.i++
	}
	return n, p.i-start >= min
}

func (p *dtParser) lit(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// bc consumes a trailing " BC" and reports whether it was there.
func (p *dtParser) bc() bool {
	if len(p.s)-p.i == 3 && string(p.s[p.i:]) == " BC" {
		p.i += 3
		return true
	}
	return false
}

func (p *dtParser) date() (y, m, d int64, ok bool) {
	y, ok1 := p.digits(4, 9)
	ok2 := p.lit('-')
	m, ok3 := p.digits(2, 2)
	ok4 := p.lit('-')
	d, ok5 := p.digits(2, 2)
	ok = ok1 && ok2 && ok3 && ok4 && ok5 && m >= 1 && m <= 12 && d >= 1 && d <= 31
	return y, m, d, ok
}

func parseDate(s []byte) (int64, error) {
	switch string(s) {
	case "infinity":
		return math.MaxInt64, nil
	case "-infinity":
		return math.MinInt64, nil
	}
	p := dtParser{s: s}
	y, m, d, ok := p.date()
	if !ok {
		return 0, errDatetime
	}
	if p.bc() {
		y = 1 - y
	}
	if p.i != len(s) {
		return 0, errDatetime
	}
	return daysFromCivil(y, m, d), nil
}

func parseTimestamp(s []byte) (int64, error) {
	switch string(s) {
	case "infinity":
		return math.MaxInt64, nil
	case "-infinity":
		return math.MinInt64, nil
	}
	p := dtParser{s: s}
	y, mo, d, ok := p.date()
	if !ok || !p.lit(' ') {
		return 0, errDatetime
	}
	h, ok1 := p.digits(2, 2)
	ok2 := p.lit(':')
	mi, ok3 := p.digits(2, 2)
	ok4 := p.lit(':')
	sec, ok5 := p.digits(2, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return 0, errDatetime
	}
	var us int64
	if p.lit('.') {
		start := p.i
		f, ok := p.digits(1, 6)
		if !ok {
			return 0, errDatetime
		}
		for n := p.i - start; n < 6; n++ {
			f *= 10
		}
		us = f
	}
	var off int64 // seconds east of UTC
	if p.i < len(s) && (s[p.i] == '+' || s[p.i] == '-') {
		neg := s[p.i] == '-'
		p.i++
		oh, ok := p.digits(2, 2)
		if !ok {
			return 0, errDatetime
		}
		off = oh * 3600
		if p.lit(':') {
			om, ok := p.digits(2, 2)
			if !ok {
				return 0, errDatetime
			}
			off += om * 60
			if p.lit(':') {
				os, ok := p.digits(2, 2)
				if !ok {
					return 0, errDatetime
				}
				off += os
			}
		}
		if neg {
			off = -off
		}
	}
	if p.bc() {
		y = 1 - y
	}
	if p.i != len(s) {
		return 0, errDatetime
	}
	days := daysFromCivil(y, mo, d)
	return days*usPerDay + ((h*60+mi)*60+sec-off)*1000000 + us, nil
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic Gregorian
// date with astronomical year numbering (1 BC is year 0).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}
