-- A billing contact row's `contact` was json (0019): PostgreSQL checked on every row written that
-- the text is JSON. This process writes that text itself (serde_json), and parses it again
-- whenever it reads it, so the check on the way in found nothing the reader would not. It was
-- most of the write's cost: a binary COPY of 298,800 contact rows took the backend 0.87, 1.49,
-- 1.05 and 1.04 s of CPU into json and 0.57, 0.78, 0.60 and 0.62 s into text (2026-12-01, four
-- runs each). Readers now join the stored texts into one JSON array (`string_agg`) and parse it
-- in the application, as they parsed json_agg's array before.
ALTER TABLE billing_contacts ALTER COLUMN contact TYPE text;
