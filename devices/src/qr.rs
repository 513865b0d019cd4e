//! QR codes of device configs, made by the `qrcode` crate: PNG (the Mini App's image, the bot's
//! photo) or SVG.

use std::io::Cursor;

/// A QR code could not be made (the text is too long for a QR code, or the PNG encoder failed).
#[derive(Debug, thiserror::Error)]
#[error("the QR code could not be made: {0}")]
pub struct QrError(String);

/// The QR code of `text` as PNG bytes, at least `min_pixels` wide and high.
pub fn qr_png(text: &str, min_pixels: u32) -> Result<Vec<u8>, QrError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| QrError(e.to_string()))?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(min_pixels, min_pixels)
        .build();
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma8(image)
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| QrError(e.to_string()))?;
    Ok(png)
}

/// The QR code of `text` as an SVG document, at least `min_pixels` wide and high.
pub fn qr_svg(text: &str, min_pixels: u32) -> Result<String, QrError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| QrError(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(min_pixels, min_pixels)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[Interface]\nAddress = 10.8.0.2/32\n";

    #[test]
    fn png_codes_are_png_images_of_at_least_the_asked_size() {
        for size in [320, 512] {
            let png = qr_png(CONFIG, size).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            let decoded = image::load_from_memory(&png).unwrap();
            assert!(decoded.width() >= size && decoded.height() >= size);
        }
    }

    #[test]
    fn svg_codes_are_svg_documents() {
        let svg = qr_svg(CONFIG, 320).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    }

    #[test]
    fn a_text_too_long_for_a_qr_code_is_an_error_not_a_panic() {
        let error = qr_png(&"x".repeat(8000), 320).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the QR code could not be made")
        );
    }
}
