import EventLogWire
import Testing

@Suite("Durations as text")
struct DurationTextTests {
    @Test(
        "whole numbers with units ms, s, m, h, d, w, summed; any case, spaces around, one leading +",
        arguments: [
            ("30d", 30 * 86_400_000), ("1h", 3_600_000), ("15m", 900_000), ("1h30m", 5_400_000), ("500ms", 500),
            ("2w", 1_209_600_000), ("45s", 45_000), ("0s", 0), ("90s", 90_000), ("2h", 7_200_000),
            ("7d", 604_800_000), ("0ms", 0), ("1m1m", 120_000), ("1d2h3m4s5ms", 93_784_005), ("015m", 900_000),
            ("30D", 30 * 86_400_000), ("500MS", 500), ("1H30M", 5_400_000), (" 15m ", 900_000),
            ("+15m", 900_000), ("9223372036854775807ms", Int64.max),
        ] as [(String, Int64)]
    )
    func accepted(text: String, milliseconds: Int64) throws {
        #expect(try DurationText.parse(text) == .milliseconds(milliseconds))
    }

    @Test(
        "anything else says what is accepted",
        arguments: [
            "", " ", "10", "1y", "-5m", "-0s", "h", "1.5h", "30 d", "1h 30m", "m5", "+", "++1m", "+-1m", "1µs",
            "15mins", "1e3s", "٣s", "15m+", "99999999999999999999s",
        ]
    )
    func malformed(text: String) {
        let error = #expect(throws: DurationTextError.self) { try DurationText.parse(text) }
        #expect(error?.reason == .malformed)
        #expect(error?.text == text)
        #expect(
            error?.message
                == "invalid duration \"\(text)\": use whole numbers with units ms, s, m, h, d, w, e.g. 30d, 1h30m or 500ms"
        )
        #expect(error?.description == error?.message)
    }

    @Test(
        "more milliseconds than 64 bits hold is too large",
        arguments: ["9223372036854775807s", "15250284453w", "9223372036854775807ms1ms"])
    func tooLarge(text: String) {
        let error = #expect(throws: DurationTextError.self) { try DurationText.parse(text) }
        #expect(error?.reason == .tooLarge)
        #expect(error?.message == "invalid duration \"\(text)\": too large")
    }

    @Test(
        "printing: the largest two units, days at most, milliseconds only below a second",
        arguments: [
            (Duration.zero, "0s"), (.milliseconds(250), "250ms"), (.milliseconds(999), "999ms"), (.seconds(1), "1s"),
            (.milliseconds(1500), "1s"), (.seconds(5400), "1h30m"), (.seconds(86_400 * 2 + 3600 * 3 + 60), "2d3h"),
            (.seconds(3605), "1h5s"), (.seconds(14 * 86_400), "14d"), (.seconds(90), "1m30s"),
            (.microseconds(1500), "1ms"), (.microseconds(999), "0s"),
        ] as [(Duration, String)]
    )
    func format(duration: Duration, text: String) {
        #expect(DurationText.format(duration) == text)
    }

    @Test(
        "what format prints parses back to the same duration when two units hold it",
        arguments: [
            Duration.zero, .milliseconds(7), .seconds(59), .seconds(5400), .seconds(86_400 * 30),
            .seconds(86_400 + 1), .seconds(7 * 86_400 + 3600),
        ]
    )
    func roundTrip(duration: Duration) throws {
        #expect(try DurationText.parse(DurationText.format(duration)) == duration)
    }
}
