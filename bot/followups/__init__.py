"""Follow-ups on a job's message: Re-roll, Upscale (U1..Un), Variations (V1..Vn) and Cancel."""
