import Testing

@testable import EventLog

@Suite("Sizes and durations")
struct TextTests {
    @Test(
        "sizes: decimal and binary units, case-insensitive, a bare number is bytes",
        arguments: [
            ("512", 512), ("10B", 10), ("10MB", 10_000_000), ("10mb", 10_000_000), ("1GiB", 1 << 30),
            ("2KiB", 2048), ("3TB", 3_000_000_000_000), ("0", 0),
        ] as [(String, Int64)]
    )
    func sizes(text: String, bytes: Int64) throws {
        #expect(try MaintenanceText.parseSize(text) == bytes)
    }

    @Test("a malformed size says what is accepted", arguments: ["", "1.5GB", "10XB", "MB", "-1MB", "99999999999TB"])
    func badSizes(text: String) {
        let error = #expect(throws: MaintenanceError.self) { try MaintenanceText.parseSize(text) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.hasPrefix("invalid size \"\(text)\": ") == true)
    }

    @Test(
        "durations: ms, s, m, h, d, w, and sums like 1h30m",
        arguments: [
            ("30d", 30 * 86_400_000), ("1h", 3_600_000), ("15m", 900_000), ("1h30m", 5_400_000), ("500ms", 500),
            ("2w", 1_209_600_000), ("45s", 45_000), ("0s", 0),
        ] as [(String, Int64)]
    )
    func durations(text: String, milliseconds: Int64) throws {
        #expect(try MaintenanceText.parseDuration(text) == .milliseconds(milliseconds))
    }

    @Test("a malformed duration says what is accepted", arguments: ["", "10", "1y", "-5m", "h", "1.5h", "30 d"])
    func badDurations(text: String) {
        let error = #expect(throws: MaintenanceError.self) { try MaintenanceText.parseDuration(text) }
        #expect(
            error?.message
                == "invalid duration \"\(text)\": "
                + "use whole numbers with units ms, s, m, h, d, w, e.g. 30d, 1h30m or 500ms"
        )
    }

    @Test("printing sizes and durations for people")
    func formatting() {
        #expect(MaintenanceText.formatBytes(512) == "512 B")
        #expect(MaintenanceText.formatBytes(1536) == "1.5 KiB")
        #expect(MaintenanceText.formatBytes(10 << 30) == "10.0 GiB")
        #expect(MaintenanceText.formatDuration(.milliseconds(250)) == "250ms")
        #expect(MaintenanceText.formatDuration(.seconds(5400)) == "1h30m")
        #expect(MaintenanceText.formatDuration(.seconds(86_400 * 2 + 3600 * 3 + 60)) == "2d3h")
    }
}
